"""The model-side preflight: grid points checked by the estimators, the saved model's round trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from imblearn.over_sampling import SMOTE

from churn.config import ConfigError, JobSpec, load_job
from churn.data.validate import validate_partition
from churn.modeling.pipeline import build_pipeline, inference_pipeline
from churn.modeling.preflight import check_grids, check_round_trip, covering_points
from churn.serving.trusted import UntrustedModelError, dump_pipeline
from tests.conftest import ROOT, TELCO

JOB = ROOT / "jobs" / "train.yaml"


@pytest.fixture
def numeric_table() -> tuple[JobSpec, pd.DataFrame, pd.Series]:
    """A dense all-numeric table (8 float columns, 15 % positives): SMOTE's neighbours use a KD-tree."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 8)), columns=[f"x{i}" for i in range(8)])
    y = pd.Series((X["x0"] + rng.normal(scale=0.5, size=400) > 1.0).astype(int))
    job = JobSpec.model_validate({
        "data": {"source": "unused.csv"},
        "schema": {"id": None, "label": "churn", "positive": "1", "negative": "0", "numeric": list(X.columns)},
        "model": {"families": ["logistic_regression", "random_forest"], "imbalance": "smote",
                  "grids": {"random_forest": {"n_estimators": [5, 10]}}},
    })
    return job, X, y


@pytest.mark.parametrize("override, message", [
    ("model.grids.random_forest.n_estimators=[-1]",
     r"model.grids.random_forest: grid point \(.*n_estimators=-1[,;)].* is refused by RandomForestClassifier: "
     r"The 'n_estimators' parameter"),
    ("model.grids.logistic_regression.C=[-1]",
     r"model.grids.logistic_regression: grid point \(.*C=-1[,;)].* is refused by LogisticRegression"),
    ("model.grids={random_forest: {depth: [3]}}", "model.grids.random_forest: random_forest has no parameter 'depth'"),
    ("model.grids={svm: {gamma: [-2.0]}}", r"model.grids.svm: grid point \(.*gamma=-2.0[,;)].* is refused by SVC"),
    ("search.scoring=auc", "search.scoring: unknown scoring 'auc'"),
    ("search.scoring=top_k_accuracy", "search.scoring: scoring 'top_k_accuracy' cannot be computed from "
                                      "per-partition score summaries"),
    ("search.scoring=neg_brier_score", "search.scoring: neg_brier_score needs probabilities, but svm scores with a "
                                       "decision function"),
])
def test_grid_points_the_estimator_rejects_are_named(override, message):
    """Each bad value is refused with the key and value, without fitting anything."""
    with pytest.raises(ConfigError, match=message):
        check_grids(load_job(JOB, [override]))


def test_shipped_job_passes_the_grid_check():
    """The default job's grids are all valid."""
    check_grids(load_job(JOB))


def test_covering_points_use_every_value():
    """Every value of every key appears in at least one point; no more points than the longest list."""
    grid = {"a": [1, 2, 3], "b": ["x"], "c": [None, 0.5]}
    points = covering_points(grid)
    assert len(points) == 3
    for key, values in grid.items():
        assert {p[key] for p in points} == set(values)


def test_smote_kd_tree_stays_out_of_the_saved_model(numeric_table, tmp_path):
    """A fitted SMOTE on dense numbers holds a KD-tree the trusted list refuses; the saved model
    has no resample step and survives the round trip with the same predictions."""
    job, X, y = numeric_table
    sampler = SMOTE(random_state=0)
    sampler.fit_resample(X, y)
    with pytest.raises(UntrustedModelError, match="KDTree"):
        dump_pipeline(sampler, str(tmp_path / "smote.skops"))
    fitted = build_pipeline(job.table, "random_forest", "smote", 0).fit(X, y)
    model = inference_pipeline(fitted)
    assert "resample" not in model.named_steps
    np.testing.assert_array_equal(model.predict_proba(X), fitted.predict_proba(X))
    check_round_trip(job, X, y, rows=300)  # every family's covering points round-trip


def test_covering_points_of_partial_grids():
    """Shared keys and each partial grid's own settings all appear, in as many points as the widest."""
    grid = [{"C": [1, 2, 3, 4], "m": ["none"], "w": [None, "balanced"]}, {"C": [1, 2, 3, 4], "m": ["smote"]}]
    points = covering_points(grid)
    assert len(points) == 4
    assert {p["C"] for p in points} == {1, 2, 3, 4}
    assert {(p["m"], p.get("w")) for p in points} == {("none", None), ("none", "balanced"), ("smote", None)}


@pytest.mark.parametrize("imbalance", ["smote", "smotenc"])
def test_every_family_of_the_shipped_job_round_trips(imbalance):
    """All seven families, fitted on 300 Telco rows, survive the registered model's dump and load."""
    job = load_job(JOB, [f"model.imbalance={imbalance}"])
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(1500)
    clean, _ = validate_partition(raw, job.table, "t.csv", np.arange(len(raw)))
    assert len(job.model.families) == 7
    check_round_trip(job, clean[job.table.features], clean["_label"], rows=300)
