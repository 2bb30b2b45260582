"""One rule set: a score or monitor job checks rows with the table logged with the model, and a job
whose own schema differs from it is refused with the difference named. Pure: no store, no cluster."""

from __future__ import annotations

import pytest

from churn.config import ConfigError, load_job
from churn.tracking.model_rules import model_table, rule_differences
from churn.tracking.registry import serving_rules
from tests.conftest import ROOT

URI = "models:/customer-churn@champion"


@pytest.fixture(scope="module")
def table():
    return load_job(ROOT / "jobs" / "train.yaml").table


def _changed(table, change: dict):
    data = table.model_dump()
    for path, value in change.items():
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    return type(table).model_validate(data)


def test_a_job_without_schema_takes_the_models_whole_table(table):
    """id, label, its values, ignored columns and every rule come back from the logged JSON."""
    assert model_table(None, serving_rules(table), URI) == table


def test_a_job_with_the_models_rules_keeps_its_own_id_and_label(table):
    """Level order does not matter; the id and label describe the job's files."""
    mine = _changed(table, {"categorical.Contract.values": ["Two year", "One year", "Month-to-month"],
                            "id": "account", "label": "left", "positive": "1", "negative": "0"})
    assert model_table(mine, serving_rules(table), URI) is mine


@pytest.mark.parametrize(("change", "named"), [
    ({"numeric.tenure.min": -1.0}, "schema.numeric.tenure.min: -1.0 in the job, 0.0 in the model"),
    ({"numeric.tenure.integer": False}, "schema.numeric.tenure.integer: False in the job, True in the model"),
    ({"numeric.TotalCharges.nullable": False}, "schema.numeric.TotalCharges.nullable: False in the job, True"),
    ({"categorical.Contract.values": ["Month-to-month", "One year", "Two year", "Ten year"]},
     "schema.categorical.Contract: the job allows 'Ten year', the model does not"),
    ({"categorical.Contract.values": ["Month-to-month", "One year"]},
     "schema.categorical.Contract: the model allows 'Two year', the job does not"),
    ({"categorical.Contract.values": None}, "schema.categorical.Contract: any level in the job, listed levels"),
    ({"categorical.gender": None}, "schema.categorical: the model's feature 'gender' is not declared"),
    ({"numeric.Extra": {"integer": False, "nullable": False, "min": None, "max": None}},
     "schema.numeric.Extra: not a model feature"),
])
def test_a_difference_is_refused_with_column_and_rule(table, change, named):
    job = _changed(table, change)
    with pytest.raises(ConfigError) as err:
        model_table(job, serving_rules(table), URI)
    message = str(err.value)
    assert named in message and "\n" not in message
    assert message.startswith(f"schema: the job's rules differ from those logged with {URI}: ")


def test_a_feature_moved_to_the_other_kind_is_named(table):
    job = _changed(table, {"numeric.tenure": None, "categorical.tenure": {"values": None, "nullable": False}})
    assert rule_differences(job, serving_rules(table)) == ["schema.categorical.tenure: numeric in the model"]


def test_many_differences_stay_one_line(table):
    job = _changed(table, {f"numeric.{c}.min": -5.0 for c in table.numeric})
    message = str(pytest.raises(ConfigError, model_table, job, serving_rules(table), URI).value)
    assert message.count(" in the job, ") == 3 and "(and 1 more)" in message and "\n" not in message


def test_a_model_logged_with_feature_rules_only_needs_the_jobs_schema(table):
    """Models logged before the table travelled with them: the job's schema is checked against
    their feature rules; without one the job is refused, naming what to add."""
    old = {k: v for k, v in serving_rules(table).items() if k in ("numeric", "categorical")}
    assert model_table(table, old, URI) is table
    with pytest.raises(ConfigError, match=r"logged with its feature rules only .* give the table's `schema`"):
        model_table(None, old, URI)


def test_a_model_table_whose_id_is_named_like_a_score_column_is_refused_by_score(table):
    """A score job without schema takes the model's table; an id named like a score column there
    would be overwritten by it in the scores (the spec's own check sees no table): refused, named."""
    from churn.config import load_score_job
    from churn.jobs.score import score_table

    spec = load_score_job(ROOT / "jobs" / "score.yaml", ["data.source=x.csv"])
    assert score_table(spec, serving_rules(table)).table == table
    with pytest.raises(ConfigError, match=r"schema.id 'probability' is a column churn writes in the scores .*"
                                          r"\(the table logged with models:/customer-churn@champion\)"):
        score_table(spec, serving_rules(_changed(table, {"id": "probability"})))
