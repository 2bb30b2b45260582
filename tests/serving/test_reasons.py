"""Reason codes: contributions per raw column that add up to the model's log-odds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from churn.config import load_job
from churn.data.generate import generate
from churn.data.validate import validate_partition
from churn.modeling.features import GroupSums, TableCoercer
from churn.modeling.pipeline import build_pipeline, inference_pipeline
from churn.serving.calibration import ChurnClassifier, ScoreCalibrator, member_scores
from churn.serving.reasons import explain, feature_sources, reason_columns, top_reasons
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """600 seeded generated Telco-shaped rows (a few blanks), as model inputs, and 40 more to explain."""
    out = tmp_path_factory.mktemp("reasons")
    res = generate(out, rows=640, files=1, seed=11)
    raw = pd.read_csv(res.files[0], dtype=str, keep_default_na=False)
    job = load_job(ROOT / "jobs" / "train.yaml")
    clean, _ = validate_partition(raw, job.table, "x", np.arange(len(raw)))
    X, y = clean[job.table.features], clean["_label"].astype(int).to_numpy()
    return job.table, X.iloc[:600], y[:600], X.iloc[600:]


def _fit(schema, family, X, y, **params):
    sums = {"charges_sum": list(schema.numeric)[-2:]} if family in ("logistic_regression", "xgboost") else None
    pipe = build_pipeline(schema, family, "none", seed=0, sums=sums)
    grid = {"logistic_regression": {"encode__num__basis__kind": "spline"},
            "hist_gradient_boosting": {"model__max_iter": 25, "model__early_stopping": False},
            "xgboost": {"model__n_estimators": 25, "model__early_stopping_rounds": None},
            "random_forest": {"model__n_estimators": 8, "model__max_depth": 6},
            "decision_tree": {"model__max_depth": 6}}.get(family, {})
    return inference_pipeline(pipe.set_params(**grid, **params).fit(X, y))


def _logit(p):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@pytest.mark.parametrize("family", ["logistic_regression", "decision_tree", "hist_gradient_boosting", "xgboost",
                                    "random_forest"])
def test_contributions_add_up_to_the_log_odds(sample, family):
    """Base + contributions = the pipeline's own log-odds, per row (exact families to 1e-6; the
    forest's sum is exact too, its split between columns approximate)."""
    schema, X, y, rows = sample
    pipe = _fit(schema, family, X, y)
    ex = explain(pipe, rows)
    assert ex.columns == [*schema.numeric, *schema.categorical]
    assert ex.exact == (family != "random_forest")
    np.testing.assert_allclose(ex.log_odds, _logit(member_scores(pipe, rows)), atol=1e-6, rtol=0)
    assert (np.abs(ex.values) > 1e-9).sum(axis=1).min() >= 2  # more than one column moves each row


def test_stack_combines_members_through_its_weights(sample):
    """A sigmoid stack of three families (one of them an SVM, approximate): base + contributions =
    the calibrated log-odds; an isotonic map explains the member before the map."""
    schema, X, y, rows = sample
    members = [_fit(schema, f, X, y) for f in ("hist_gradient_boosting", "logistic_regression", "svm")]
    S = np.column_stack([member_scores(m, X) for m in members])
    stack = ChurnClassifier(members, ScoreCalibrator("sigmoid", (True, True, False)).fit(S, y))
    ex = explain(stack, rows)
    np.testing.assert_allclose(ex.log_odds, _logit(stack.predict_proba(rows)[:, 1]), atol=1e-6, rtol=0)
    assert not ex.exact and ex.calibrated
    iso = ChurnClassifier(members[:1], ScoreCalibrator("isotonic", (True,)).fit(S[:, :1], y))
    ex = explain(iso, rows)
    assert ex.exact and not ex.calibrated
    np.testing.assert_allclose(ex.log_odds, _logit(member_scores(members[0], rows)), atol=1e-6, rtol=0)


def test_grouping_by_hand():
    """A tiny linear pipeline: the grouped contributions equal the ones computed by hand (one-hot
    columns to their column against 1/k each, a sum column split evenly over its two parts)."""
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 1.0, 0.0, 2.0], "c": ["x", "y", "z", "x"]})
    y = np.array([0, 1, 0, 1])
    enc = ColumnTransformer([("num", StandardScaler(), ["a", "b", "s"]),
                             ("cat", OneHotEncoder(sparse_output=False), ["c"])])
    pipe = Pipeline([("coerce", TableCoercer(numeric=["a", "b"], categorical=["c"])),
                     ("sums", GroupSums(groups={"s": ["a", "b"]})), ("encode", enc),
                     ("model", LogisticRegression())]).fit(X, y)
    M, raw, bg = feature_sources(pipe)
    assert raw == ["a", "b", "c"]
    np.testing.assert_allclose(M, [[1, 0, 0], [0, 1, 0], [0.5, 0.5, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]])
    ex = explain(pipe, X)
    w, b = pipe[-1].coef_[0], pipe[-1].intercept_[0]
    s = X.a + X.b
    za, zb, zs = ((v - v.mean()) / v.std(ddof=0) for v in (X.a, X.b, s))
    onehot = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]])
    by_hand = np.column_stack([w[0] * za + w[2] * zs / 2, w[1] * zb + w[2] * zs / 2,
                               (onehot - 1 / 3) @ w[3:]])
    np.testing.assert_allclose(ex.values, by_hand, atol=1e-9)
    np.testing.assert_allclose(ex.base, b + w[3:].sum() / 3, atol=1e-9)
    reasons = top_reasons(ex, X, k=2)
    assert list(reasons.columns) == reason_columns(2)
    first = np.argmax(np.abs(by_hand), axis=1)
    assert reasons["reason_1_column"].tolist() == [raw[i] for i in first]
    assert reasons["reason_1_value"].tolist() == [str(X[raw[i]].iloc[r]) if raw[i] == "c" else f"{X[raw[i]].iloc[r]:g}"
                                                  for r, i in enumerate(first)]
