"""The model pipeline: SMOTE resamples only the training part of each CV fold."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import GridSearchCV

from churn.config import load_job
from churn.config.families import FAMILY_NAMES, rules
from churn.data.validate import validate_partition
from churn.modeling.features import CorrelationFilter, ImportanceSelector
from churn.modeling.pipeline import NATIVE_CATEGORIES, build_pipeline, grid_for, imbalance_of, kept_features
from churn.modeling.search import folds
from churn.serving.calibration import member_scores
from tests.conftest import ROOT, TELCO


class RecordingClassifier(ClassifierMixin, BaseEstimator):
    """Writes the rows it is fitted on and scored on to ``log_dir``, then predicts the base rate."""

    def __init__(self, log_dir: str = "", tag: int = 0):
        self.log_dir = log_dir
        self.tag = tag

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        self.rate_ = float(np.mean(y))
        self.fit_id_ = os.urandom(6).hex()
        self._write("fit", X, y)
        return self

    def predict_proba(self, X):
        self._write("score", X, None)
        return np.column_stack([np.full(len(X), 1 - self.rate_), np.full(len(X), self.rate_)])

    def _write(self, kind, X, y):
        rec = {"fit_id": self.fit_id_, "kind": kind, "rows": np.asarray(X).round(6).tolist(),
               "y": None if y is None else np.asarray(y).tolist()}
        with open(os.path.join(self.log_dir, f"{kind}-{self.fit_id_}-{os.urandom(4).hex()}.json"), "w") as fh:
            json.dump(rec, fh)


def test_smote_touches_only_training_folds(tmp_path):
    """Fits see originals + synthetic rows (balanced); scoring sees exactly the untouched held-out fold."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(600)
    clean, _ = validate_partition(raw, job.table, "t.csv", np.arange(len(raw)))
    X, y = clean[job.table.features], clean["_label"].astype(int)
    pipe = build_pipeline(job.table, "random_forest", "smote", seed=1)
    pipe.steps[-1] = ("model", RecordingClassifier(log_dir=str(tmp_path)))
    cv = folds(3, seed=1)
    search = GridSearchCV(pipe, {"model__tag": [0]}, cv=cv, scoring="roc_auc", n_jobs=1, refit=False)
    search.fit(X, y)

    records = [json.loads(p.read_text()) for p in tmp_path.glob("*.json")]
    fits = {r["fit_id"]: r for r in records if r["kind"] == "fit"}
    scores = [r for r in records if r["kind"] == "score"]
    assert len(fits) == 3 and len(scores) == 3
    prep = build_pipeline(job.table, "random_forest", "none", seed=1)[:-2]  # without resample and model
    for train_idx, test_idx in cv.split(X, y):
        fitted_prep = prep.fit(X.iloc[train_idx], y.iloc[train_idx])
        train_rows = np.asarray(fitted_prep.transform(X.iloc[train_idx])).round(6)
        test_rows = np.asarray(fitted_prep.transform(X.iloc[test_idx])).round(6)
        fit = next(f for f in fits.values() if len(f["rows"]) > len(train_idx)
                   and np.allclose(np.asarray(f["rows"])[: len(train_idx)], train_rows))
        fy = np.asarray(fit["y"])
        assert (fy == 1).sum() == (fy == 0).sum()  # SMOTE balanced the training part
        assert np.array_equal(fy[: len(train_idx)], y.iloc[train_idx].to_numpy())  # originals first
        score = next(s for s in scores if s["fit_id"] == fit["fit_id"])
        assert np.allclose(np.asarray(score["rows"]), test_rows)  # held-out fold: no synthetic rows
        assert len(score["rows"]) == len(test_idx)


def test_grid_is_prefixed_for_the_model_step():
    """Grid keys from the job apply to the pipeline's model step."""
    grid = grid_for("random_forest", {"n_estimators": [10, 20]})
    assert grid == [{"model__n_estimators": [10, 20]}]


def test_imbalance_treatments_become_partial_grids():
    """none and class_weight share the resample setting (one fold preparation); smote has its own;
    a family that cannot do a treatment does not search it."""
    grid = grid_for("logistic_regression", {"C": [1.0]}, imbalance=["none", "class_weight", "smote"])
    assert grid == [{"model__C": [1.0], "resample__method": ["none"], "model__class_weight": [None, "balanced"]},
                    {"model__C": [1.0], "resample__method": ["smote"], "model__class_weight": [None]}]
    assert grid_for("mlp", {"alpha": [0.1]}, imbalance=["none", "class_weight", "smote"]) == [
        {"model__alpha": [0.1], "resample__method": ["none"]}, {"model__alpha": [0.1], "resample__method": ["smote"]}]
    assert grid_for("hist_gradient_boosting", {"max_leaf_nodes": [7]}, imbalance=["smote"]) == [
        {"model__max_leaf_nodes": [7]}]  # native categories: no SMOTE, so only none is left
    assert imbalance_of({"resample__method": "none", "model__class_weight": "balanced"}, "logistic_regression",
                        ["none", "class_weight"]) == "class_weight"


def test_row_cap_samples_the_training_rows_only():
    """A capped family fits on a seeded, stratified sample of max_rows rows; predictions cover every row."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(600)
    clean, _ = validate_partition(raw, job.table, "t.csv", np.arange(len(raw)))
    X, y = clean[job.table.features], clean["_label"].astype(int)
    pipe = build_pipeline(job.table, "logistic_regression", "none", seed=0, max_rows=200)
    Xt, yt = pipe.named_steps["resample"].fit_resample(X, y)
    assert len(Xt) == 200 and abs(yt.mean() - y.mean()) < 0.01
    again, _ = pipe.named_steps["resample"].fit_resample(X, y)
    assert Xt.index.equals(again.index)  # seeded
    assert pipe.fit(X, y).predict_proba(X).shape == (len(X), 2)




@pytest.mark.parametrize("imbalance", ["smote", "smotenc", "class_weight", "none"])
@pytest.mark.parametrize("family", list(FAMILY_NAMES))
def test_every_family_trains_and_predicts(family, imbalance):
    """Each family x imbalance mode fits on a small sample and gives probabilities for raw rows."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(300)
    clean, _ = validate_partition(raw, job.table, "t.csv", np.arange(len(raw)))
    X, y = clean[job.table.features], clean["_label"].astype(int)
    pipe = build_pipeline(job.table, family, imbalance, seed=0)
    if family == "mlp":
        pipe.set_params(model__max_iter=30)
    pipe.set_params(select_corr__threshold=0.95)
    scores = member_scores(pipe.fit(X, y), raw[job.table.features].head(20))
    assert scores.shape == (20,) and np.isfinite(scores).all()
    if family != "svm":  # SVC scores with its decision function; the calibration map makes probabilities
        assert ((scores >= 0) & (scores <= 1)).all()
    assert 0 < len(kept_features(pipe)) <= len(pipe.named_steps["encode"].get_feature_names_out())
    if imbalance == "smotenc" and rules(family).supports_smote:
        assert "smote" in pipe.named_steps
    else:
        expected = "smote" if imbalance == "smote" and rules(family).supports_smote else "none"
        assert pipe.named_steps["resample"].method == expected


@pytest.mark.parametrize("imbalance", ["smote", "smotenc", "class_weight", "none"])
@pytest.mark.parametrize("family", list(FAMILY_NAMES))
def test_category_columns_give_the_same_model_as_text_columns(family, imbalance):
    """Fitted and scored on rows whose categoricals are pandas categories (the clean dataset, the
    batch scorer), every family gives the scores it gives on the same rows as text, untrimmed
    and blank cells included (with feature sums for the native-categorical family)."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(300)
    clean, _ = validate_partition(raw, job.table, "t.csv", np.arange(len(raw)))
    as_text, y = clean[job.table.features].copy(), clean["_label"].astype(int)
    cats = list(job.table.categorical)
    as_text = as_text.astype({c: object for c in cats})
    as_text.loc[::7, cats[0]] = np.nan  # blanks
    as_text.loc[::5, cats[1]] = as_text.loc[::5, cats[1]] + " "  # one level, untrimmed
    as_category = as_text.astype({c: "category" for c in cats})

    def scores(X: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
        sums = job.table.sum_groups() if family in NATIVE_CATEGORIES else None
        pipe = build_pipeline(job.table, family, imbalance, seed=0, sums=sums)
        if family == "mlp":
            pipe.set_params(model__max_iter=30)
        return member_scores(pipe.set_params(select_corr__threshold=0.95).fit(X, y), rows)

    expected = scores(as_text, as_text)
    np.testing.assert_allclose(scores(as_category, as_category), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(scores(as_text, as_category), expected, rtol=1e-12, atol=1e-12)


def test_correlation_filter_drops_one_of_a_correlated_pair():
    """Of two near-identical columns the later one goes; unrelated columns stay."""

    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    X = np.column_stack([a, a + rng.normal(scale=0.01, size=500), rng.normal(size=500)])
    f = CorrelationFilter(threshold=0.9).fit(X)
    assert f.get_support().tolist() == [True, False, True]
    assert f.transform(X).shape == (500, 2)
    assert CorrelationFilter(threshold=None).fit(X).get_support().all()


def test_importance_selector_keeps_the_informative_columns():
    """With a 'mean' threshold the columns that carry the label are kept."""

    rng = np.random.default_rng(1)
    X = rng.normal(size=(600, 6))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    keep = ImportanceSelector(threshold="mean", random_state=0).fit(X, y).get_support()
    assert keep[0] and keep[1]
    assert keep.sum() < 6


def test_every_searched_parameter_has_a_name_a_person_reads():
    """MLflow params are named as the job spells the grid (``numeric_basis``, ``C``, ``resample``),
    never as a pipeline path (``encode__num__basis__kind``)."""
    from churn.config.families import readable

    job = load_job(ROOT / "jobs" / "train.yaml", ["model.selection.correlation_threshold=[null, 0.9]",
                                                  "model.selection.importance_threshold=[null, 0.01]"])
    for fam in FAMILY_NAMES:
        grid = grid_for(fam, job.model.grids.get(fam), job.model.selection, job.model.imbalance)
        keys = {k for part in (grid if isinstance(grid, list) else [grid]) for k in part}
        names = {readable(k) for k in keys}
        assert not [n for n in names if "__" in n or "." in n], fam
        assert {"resample", "correlation_threshold", "importance_threshold"} <= names
    assert readable("encode__num__basis__kind") == "numeric_basis"
