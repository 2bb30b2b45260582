"""The promotion gate: a worse model does not become @champion, concurrent trains end with the
better one, and a driver whose run was marked FAILED registers nothing."""

from __future__ import annotations

import io
import time
from types import SimpleNamespace

import dask.config
import mlflow
import numpy as np
import pandas as pd
import pytest
import typer
from rich.console import Console
from sklearn.metrics import roc_auc_score

from churn.cli.app import EXIT_RUNTIME, _on_cluster
from churn.cli.summary import result_table
from churn.config import ConfigError
from churn.data.split import load_splits
from churn.jobs.train import run
from churn.modeling.summary import ScoreSummary
from churn.tracking.model_rules import logged_rules
from churn.tracking.promotion import (
    ALIAS_MOVE_TAG,
    REFIT_TAG,
    TEST_ROWS_TAG,
    TEST_SCORE_TAG,
    Gate,
    gate_score,
    model_fingerprint,
    owner_check,
    promote,
    schema_difference,
    tolerance,
    version_score,
)
from churn.tracking.registry import alias_version
from churn.tracking.run_log import RunEndedError
from churn.tracking.run_state import (
    HEARTBEAT_TAG,
    INTERVAL_TAG,
    claim_run,
    fail_if_lost,
    ownership_problem,
    run_status,
)
from churn.tracking.verify import DIGESTS_TAG
from tests.conftest import job_spec

# the smallest train job: one family, one candidate, 2 folds, no rescoring, no sums screen, no plots;
# tenure a nullable integer (see test_a_nullable_integer_column_takes_integers_and_blanks)
SMALL = ("search.cv=2", "search.repeats=1", "evaluation.plots=false", "model.families=[logistic_regression]",
         "model.grids={logistic_regression: {C: [1.0]}}", "model.imbalance=none", "model.feature_sums=false",
         "schema.numeric.tenure={integer: true, min: 0, nullable: true}")
MODEL = "customer-churn"


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory, telco_subset):
    """Version 1: a model of the Telco subset (no champion yet). Version 2, in the same store: the
    same rows with their training labels shuffled; the test rows (by the split's id hash) keep theirs."""
    tmp = tmp_path_factory.mktemp("promotion")
    job = job_spec(tmp, telco_subset, *SMALL)
    good = run(job, client)
    split = job.split.resolved(good.dataset.manifest.rows_kept, job.search.max_rows)
    ddf = load_splits(str(good.dataset.data_path), split, job.seed)
    test_ddf = ddf[ddf["_split"] == "test"]
    test_ids = set(test_ddf["customerID"].compute())
    frame = pd.read_csv(telco_subset, dtype=str, keep_default_na=False)
    train_rows = ~frame["customerID"].isin(test_ids)
    frame.loc[train_rows, "Churn"] = np.random.default_rng(3).permutation(frame.loc[train_rows, "Churn"].to_numpy())
    shuffled = tmp / "shuffled.csv"
    frame.to_csv(shuffled, index=False)
    bad_job = job_spec(tmp, shuffled, *SMALL)
    bad = run(bad_job, client)
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    return SimpleNamespace(tmp=tmp, store=store, job=job, bad_job=bad_job, good=good, bad=bad, test_ddf=test_ddf,
                           features=job.table.features)


def test_a_model_trained_on_shuffled_labels_stays_challenger(trained):
    """The first version becomes @champion; the shuffled-label model is registered as @challenger,
    the job ends normally, and its line gives both scores on its own test rows."""
    good, bad = trained.good, trained.bad
    mlflow.set_tracking_uri(trained.store)
    assert good.promotion.line == "version 1 is @champion: no @champion yet"
    assert bad.test.metrics["roc_auc"] < 0.6 < 0.8 < good.test.metrics["roc_auc"]
    assert (bad.model_version, bad.promotion.aliases) == ("2", ["challenger"])
    assert alias_version(MODEL, "champion") == "1" and alias_version(MODEL, "challenger") == "2"
    # the champion's score on the shuffled run's test rows, computed here from the CSV through MLflow's loader
    bad_split = trained.bad_job.split.resolved(bad.dataset.manifest.rows_kept, trained.bad_job.search.max_rows)
    split = load_splits(str(bad.dataset.data_path), bad_split, trained.bad_job.seed).compute()
    raw = pd.read_csv(trained.tmp / "shuffled.csv", na_values=[" "])
    test = raw[raw["customerID"].isin(split.loc[split["_split"] == "test", "customerID"])]
    assert len(test) == bad.rows["test"]
    champion = mlflow.pyfunc.load_model(f"models:/{MODEL}/1").predict(test[trained.features])["probability"]
    theirs = roc_auc_score(test["Churn"] == "Yes", champion)
    assert theirs > 0.8
    assert bad.promotion.line == (
        f"version 2 is @challenger, @champion stays version 1: test roc_auc {bad.test.metrics['roc_auc']:.4f} vs "
        f"{theirs:.4f} for version 1 on this run's test rows; version 1 was refitted on train + test rows of its "
        "own data, so rows it learned from may be among these and its score is optimistic (worse by more than the "
        "tolerance 0.005)")
    assert mlflow.get_run(good.run_id).data.tags[ALIAS_MOVE_TAG] == "champion: none -> 1"
    assert mlflow.get_run(bad.run_id).data.tags[ALIAS_MOVE_TAG] == "challenger: none -> 2"
    assert mlflow.get_run(bad.run_id).info.status == "FINISHED"
    assert "holds @challenger" in mlflow.artifacts.load_text(f"runs:/{bad.run_id}/graph/stages.mmd")
    console = Console(record=True, width=300, file=io.StringIO())
    console.print(result_table(trained.bad_job, bad, wall=1.0))  # the summary `churn train` prints
    [line] = [ln for ln in console.export_text().splitlines() if "promotion" in ln]
    assert "version 2 is @challenger, @champion stays version 1" in line


def test_a_nullable_integer_column_takes_integers_and_blanks(trained, telco_subset):
    """tenure declared a nullable integer: the registered model scores rows sending it as integers
    and as blanks (MLflow would refuse int64 for a double column)."""
    mlflow.set_tracking_uri(trained.store)
    model = mlflow.pyfunc.load_model(trained.good.model_uri)
    rows = pd.read_csv(telco_subset, na_values=[" "]).head(4).drop(columns=["customerID", "Churn"])
    assert rows["tenure"].dtype == np.int64
    as_ints = model.predict(rows)["probability"]
    blanks = model.predict(rows.assign(tenure=[1.0, None, 3.0, None]))["probability"]
    assert as_ints.between(0, 1).all() and blanks.between(0, 1).all()
    # the model's own probabilities for the same rows
    np.testing.assert_allclose(as_ints, trained.good.model.predict_proba(rows)[:, 1], atol=1e-12)


def _register_copy(name: str, of_version: str):
    """A register() that adds the model of customer-churn's ``of_version`` as a new version of ``name``."""
    def register() -> str:
        client = mlflow.MlflowClient()
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        source = client.get_model_version(MODEL, of_version)
        version = str(client.create_model_version(name, source.source, run_id=source.run_id).version)
        # the same files: the digests recorded for them hold (churn's loader checks them)
        client.set_model_version_tag(name, version, DIGESTS_TAG, source.tags[DIGESTS_TAG])
        return version
    return register


def _gate(trained, client, name: str, of_version: str) -> Gate:
    """The gate of a new version of ``name`` holding customer-churn's ``of_version``, on the good run's test rows."""
    def score(version: str, model: str = name) -> float:
        return version_score(model, version, trained.test_ddf, trained.features, client, "roc_auc")
    rules = logged_rules(f"models:/{MODEL}/{of_version}")
    return Gate(name, "champion", "roc_auc", score(of_version, MODEL), rules, score)


@pytest.mark.parametrize("first", ["good", "bad"])
def test_two_concurrent_trains_end_with_the_better_one(trained, client, first):
    """Train A compares with no champion; before it moves the alias, train B registers and moves it.
    A compares again with B's version: the alias ends on the better model, and A's line says so."""
    mlflow.set_tracking_uri(trained.store)
    name = f"race-{first}-first"
    of = {"good": "1", "bad": "2"}
    a_model, b_model = ("good", "bad") if first == "good" else ("bad", "good")
    found = {}

    def register_a() -> str:  # B runs whole while A is between the gate and the move
        with mlflow.start_run(nested=True):
            found["b"] = promote(_gate(trained, client, name, of[b_model]), "fp-b", _register_copy(name, of[b_model]),
                                 lambda before: None)
        return _register_copy(name, of[a_model])()

    with mlflow.start_run():
        a = promote(_gate(trained, client, name, of[a_model]), "fp-a", register_a, lambda before: None)
    b = found["b"]
    better = a if a_model == "good" else b
    assert alias_version(name, "champion") == better.version
    assert b.line == "version 1 is @champion: no @champion yet"
    moved = "@champion moved from version none to 1 (a concurrent train) while this run compared"
    if a_model == "good":
        assert a.line.startswith("version 2 is @champion (was version 1): test roc_auc ")
        assert a.aliases == ["champion"] and a.moves == ["champion: 1 -> 2"]
    else:
        assert a.line.startswith("version 2 is @challenger, @champion stays version 1: test roc_auc ")
        assert a.aliases == ["challenger"] and a.moves == ["challenger: none -> 2"]
    assert a.line.endswith(moved)


def test_a_champion_refitted_on_these_test_rows_is_judged_by_its_recorded_score(trained, client):
    """A champion refitted on train + test rows has learned this run's test rows when they are its own:
    the gate then compares with the score recorded before its refit, not with a score on rows it
    learned from; on other rows it scores the champion again and says the score is optimistic."""
    mlflow.set_tracking_uri(trained.store)
    name = "refit-champion"
    champion = _register_copy(name, "1")()
    for key, value in {REFIT_TAG: "true", TEST_ROWS_TAG: "rows-a", TEST_SCORE_TAG: '{"roc_auc": 0.7}'}.items():
        mlflow.MlflowClient().set_model_version_tag(name, champion, key, value)
    gate = _gate(trained, client, name, "2")  # the shuffled-label model: about 0.5 on these rows
    gate.score = 0.698
    same = Gate(**{**vars(gate), "test_rows": "rows-a"}).judge(champion)
    assert same.promote and "vs 0.7000 for version 1" in same.reason
    assert "recorded before it was refitted" in same.reason
    other = Gate(**{**vars(gate), "test_rows": "rows-b"}).judge(champion)
    rescored = version_score(MODEL, "1", trained.test_ddf, trained.features, client, "roc_auc")
    assert not other.promote and f"vs {rescored:.4f} for version 1" in other.reason and rescored > 0.8
    assert "its score is optimistic" in other.reason


def test_a_champion_overwritten_right_after_the_move_is_compared_and_retaken(trained, client):
    """A concurrent train that read the alias before this one moved it writes its worse version over
    it: this run reads the alias back, compares with that version, and takes @champion again."""
    mlflow.set_tracking_uri(trained.store)
    name = "race-stale"
    stale = _register_copy(name, "2")()  # the other train's version (shuffled labels), registered already

    def check_owner(before: str) -> None:  # the other train's write lands just after this one's move
        if alias_version(name, "champion") == "2" and not overwritten:
            overwritten.append(mlflow.MlflowClient().set_registered_model_alias(name, "champion", stale))
    overwritten: list = []
    with mlflow.start_run():
        result = promote(_gate(trained, client, name, "1"), "fp-a", _register_copy(name, "1"), check_owner)
    assert alias_version(name, "champion") == result.version == "2" and overwritten
    assert result.moves == ["champion: none -> 2", "champion: 1 -> 2"]
    assert result.line.startswith("version 2 is @champion (was version 1): test roc_auc ")
    assert result.line.endswith("@champion moved from version none to 1 (a concurrent train) while this run compared")


def test_promote_forces_the_move_and_says_so(trained, client):
    """--promote: the worse version becomes @champion, and the line says it was forced, with both
    scores; an unchanged rerun with --promote moves @champion back to its version."""
    mlflow.set_tracking_uri(trained.store)
    name = "forced"
    good = _register_copy(name, "1")()
    mlflow.MlflowClient().set_registered_model_alias(name, "champion", good)
    with mlflow.start_run():
        forced = promote(_gate(trained, client, name, "2"), "fp-bad", _register_copy(name, "2"), lambda before: None,
                         force=True)
        assert (forced.version, forced.aliases, forced.moves) == ("2", ["champion"], ["champion: 1 -> 2"])
        assert forced.line.startswith("version 2 is @champion (was version 1): forced by --promote; test roc_auc ")
        assert forced.line.endswith("for version 1 on this run's test rows (worse by more than the tolerance 0.005)")
        mlflow.MlflowClient().set_registered_model_alias(name, "champion", good)
        again = promote(_gate(trained, client, name, "1"), "fp-bad", _register_copy(name, "1"), lambda before: None,
                        force=True)
        tagged = mlflow.get_run(mlflow.active_run().info.run_id).data.tags["churn.promotion"]
    assert tagged == again.line
    assert (again.version, again.registered, again.moves) == ("2", False, ["champion: 1 -> 2"])
    assert again.line == ("unchanged: version 2 already registered (same data, spec, code and seed), nothing "
                          "registered; it holds @champion (@champion moved there by --promote)")
    assert len(mlflow.MlflowClient().search_model_versions(f"name = '{name}'")) == 2


@pytest.mark.parametrize("when", ["scoring the champion", "after registering", "after moving @champion"])
def test_a_driver_whose_run_was_marked_failed_registers_nothing(trained, client, when):
    """A driver paused past the heartbeat timeout: `churn status` marks its run FAILED while the
    driver scores the champion (or right after it registered, or moved the alias). The driver stops
    with one line, no version of it remains, and @champion is where it was."""
    mlflow.set_tracking_uri(trained.store)
    store, tracking = trained.store, mlflow.MlflowClient()
    name = f"paused-{when.split()[1]}"
    champion = _register_copy(name, "2")()  # shuffled labels: the new version passes the gate
    tracking.set_registered_model_alias(name, "champion", champion)
    run_id = tracking.create_run(tracking.get_experiment_by_name("customer-churn").experiment_id).info.run_id
    token = claim_run(store, run_id)
    tracking.set_tag(run_id, INTERVAL_TAG, "0.1")
    tracking.set_tag(run_id, HEARTBEAT_TAG, f"{time.time() - 5:.3f}")  # the driver paused 5 s ago

    def churn_status() -> None:  # what `churn status RUN_ID` does with a run whose heartbeat is late
        with dask.config.set({"churn.tracking.heartbeat-timeout": "1s"}):
            fail_if_lost(store, run_status(store, run_id))

    gate, register = _gate(trained, client, name, "1"), _register_copy(name, "1")
    owned = owner_check(store, run_id, token)
    scored = gate.score_version
    if when == "scoring the champion":
        gate.score_version = lambda v: (churn_status(), scored(v))[1]

    def registered_then_paused() -> str:
        version = register()
        if when == "after registering":
            churn_status()
        return version

    def check(before: str) -> None:
        if when == "after moving @champion" and alias_version(name, "champion") == "2":
            churn_status()
        owned(before)

    with pytest.raises(RunEndedError) as err, mlflow.start_run(run_id=run_id):
        promote(gate, "fp-paused", registered_then_paused, check)
    message = str(err.value)
    assert "\n" not in message and f"run {run_id} was marked FAILED while the job ran (driver lost" in message
    assert message.endswith("stopped before registering a model version" if when == "scoring the champion"
                            else "stopped before moving an alias of version 2")
    assert [str(v.version) for v in tracking.search_model_versions(f"name = '{name}'")] == [champion]
    assert alias_version(name, "champion") == champion
    assert run_status(store, run_id).status == "FAILED"
    moved = tracking.get_run(run_id).data.tags.get(ALIAS_MOVE_TAG)
    assert moved == ("champion: 1 -> 2" if when == "after moving @champion" else None)


def test_a_run_claimed_by_another_driver_is_not_this_drivers(trained):
    """The last driver to claim a run owns it; the first one is told so."""
    store = trained.store
    tracking = mlflow.MlflowClient(store)
    run_id = tracking.create_run(tracking.get_experiment_by_name("customer-churn").experiment_id).info.run_id
    first = claim_run(store, run_id)
    assert ownership_problem(store, run_id, first) is None
    second = claim_run(store, run_id)
    assert ownership_problem(store, run_id, first) == f"run {run_id} was claimed by another driver while this one ran"
    assert ownership_problem(store, run_id, second) is None


def test_a_run_ended_from_outside_ends_the_cli_with_one_line(client, capsys):
    """The resumed driver's RunEndedError is one line on stderr and exit code 1, no traceback."""
    def work(_client):
        raise RunEndedError("run abc was marked FAILED while the job ran (driver lost); stopped before registering")
    with pytest.raises(typer.Exit) as exc:
        _on_cluster(None, client.scheduler.address, work, preflight=lambda: None)
    assert exc.value.exit_code == EXIT_RUNTIME
    err = capsys.readouterr().err
    assert "stopped before registering" in err and "Traceback" not in err


def test_gate_score_is_the_scorers_value_on_stored_probabilities():
    """ROC AUC by hand on 4 rows: of the 4 (positive, negative) pairs, 3 are ordered right."""
    y, p = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    summary = ScoreSummary.of(y, p, (0.5, 0.3, 0.38))
    assert gate_score("roc_auc", summary, 0.5) == 0.75
    # a loss keeps scikit-learn's sign (greater is better); a decision metric uses the threshold
    assert gate_score("neg_brier_score", summary, 0.5) == pytest.approx(-(0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert gate_score("accuracy", summary, 0.3) == 0.75 and gate_score("accuracy", summary, 0.38) == 0.5


def test_schema_difference_names_the_columns():
    rules = {"numeric": {"tenure": {"min": 0}, "charges": {"min": 0}}, "categorical": {"Contract": {"values": ["a"]}}}
    assert schema_difference(rules, rules) is None
    other = {"numeric": {"tenure": {"min": 1}, "age": {"min": 0}}, "categorical": {"Contract": {"values": ["a"]}}}
    assert schema_difference(rules, other) == ("numeric columns added: age; numeric columns removed: charges; "
                                               "numeric columns with other rules: tenure")
    assert schema_difference({}, rules) == "numeric missing in the champion; categorical missing in the champion"
    # the label counts where both carry it; the id and ignored columns do not
    labelled = {**rules, "label": "Churn", "positive": "Yes", "id": "customerID", "ignore": []}
    assert schema_difference(rules, labelled) is None
    assert schema_difference(labelled, {**labelled, "id": None, "ignore": ["x"]}) is None
    assert schema_difference(labelled, {**labelled, "positive": "yes"}) == "positive differs"


def test_fingerprint_follows_data_spec_and_seed(tmp_path, telco_subset):
    """The same job has the same fingerprint; another seed, dataset, grid or economics another one;
    the job's name and tracking section do not count."""
    job = job_spec(tmp_path, telco_subset, *SMALL)
    same = model_fingerprint(job, "d1", 100)
    assert same == model_fingerprint(job_spec(tmp_path / "x", telco_subset, *SMALL, "name=other",
                                              "tracking.experiment=e2"), "d1", 100)
    # a full-data model (xgboost.dask) also depends on the workers it trained on
    assert model_fingerprint(job, "d1", 100, 2) == model_fingerprint(job, "d1", 100, 2) != \
        model_fingerprint(job, "d1", 100, 4)
    for changed in (model_fingerprint(job, "d2", 100), model_fingerprint(job, "d1", 99),
                    model_fingerprint(job, "d1", 100, 2), model_fingerprint(job, "d1", 100, 4),
                    *(model_fingerprint(job_spec(tmp_path, telco_subset, *SMALL, o), "d1", 100)
                      for o in ("seed=7", "model.grids={logistic_regression: {C: [0.5]}}",
                                "evaluation.economics.offer_cost=60", "search.repeats=2"))):
        assert changed != same


def test_a_challenger_alias_mlflow_refuses_is_refused_before_the_cluster():
    """The challenger alias is set only after the whole job: one MLflow refuses (``v2``, reserved
    for versions; an empty one) is a ConfigError in the preflight's settings check."""
    from churn.tracking.promotion import check_settings

    check_settings("champion")
    for bad, why in (("v2", "reserved"), ("", "")):
        with dask.config.set({"churn.registry.challenger-alias": bad}), \
                pytest.raises(ConfigError, match=f"churn.registry.challenger-alias: MLflow refuses .*{why}"):
            check_settings("champion")


def test_tolerance_must_be_a_number_at_least_zero():
    assert tolerance() == 0.005
    for bad in (-0.1, "abc", float("nan")):
        with dask.config.set({"churn.registry.promotion-tolerance": bad}), pytest.raises(ConfigError):
            tolerance()


def test_fingerprint_of_an_unchanged_rerun_finds_its_version(trained):
    """The fingerprint the train job tags its version with is found again for the same job."""
    mlflow.set_tracking_uri(trained.store)
    fp = mlflow.MlflowClient().get_model_version(MODEL, "1").tags["churn.fingerprint"]
    rows = trained.good.rows["search"]
    assert fp == model_fingerprint(trained.job, trained.good.dataset.manifest.dataset, rows)
