"""The feature steps: the native-category encoder that feeds gradient boosting, and the group sums."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from churn.config import TableSchema
from churn.config.features import name_groups
from churn.modeling.features import CategoryEncoder, GroupSums, TableCoercer
from churn.modeling.pipeline import build_pipeline, inference_pipeline, kept_features
from churn.serving.rules import LOOP_ROWS, text_cells


def _frame() -> pd.DataFrame:
    """A number, a 3-level plan with a rare level and blanks, and a 40-level city."""
    rng = np.random.default_rng(0)
    plan = rng.choice(["basic", "plus", "pro"], size=400).astype(object)
    plan[:3] = "legacy"  # seen 3 times: rarer than min_count
    plan[3:8] = np.nan
    return pd.DataFrame({"usage": rng.normal(size=400), "plan": plan,
                         "city": [f"c{k:02d}" for k in rng.integers(0, 40, size=400)]})


def test_levels_rare_unseen_and_blank():
    """Known levels stay, a rare or new level becomes __other__, a blank stays missing, numbers pass."""
    X = _frame()
    enc = CategoryEncoder(categorical=["plan", "city"]).fit(X)
    assert enc.levels_["plan"] == ["basic", "plus", "pro"]
    out = enc.transform(pd.DataFrame({"usage": [1.5, 2.0, 3.0], "plan": ["pro", "legacy", np.nan],
                                      "city": ["c01", "nowhere", "c02"]}))
    assert list(out.columns) == ["usage", "plan", "city"]
    assert out["usage"].tolist() == [1.5, 2.0, 3.0]
    assert isinstance(out["plan"].dtype, pd.CategoricalDtype)
    assert out["plan"].tolist()[:2] == ["pro", "__other__"] and pd.isna(out["plan"].iloc[2])


def test_many_levels_become_codes():
    """Past max_native_levels a column goes in as its level codes (numbers), unseen levels last."""
    X = _frame()
    enc = CategoryEncoder(categorical=["plan", "city"], max_native_levels=16).fit(X)
    out = enc.transform(pd.DataFrame({"usage": [0.0, 0.0], "plan": ["basic", "plus"], "city": ["c00", "zz"]}))
    assert out["city"].dtype == np.float64
    assert out["city"].tolist() == [0.0, float(len(enc.levels_["city"]))]
    assert isinstance(out["plan"].dtype, pd.CategoricalDtype)


def test_batch_path_equals_row_by_row():
    """A batch (factorised) is coded and trimmed exactly as the same rows sent one at a time."""
    X = _frame()
    X.loc[10:20, "plan"] = [" pro ", " ", "", None, "basic", "nowhere", " plus", "pro", np.nan, "basic ", "x"]
    coercer = TableCoercer(numeric=["usage"], categorical=["plan", "city"]).fit(X)
    enc = CategoryEncoder(categorical=["plan", "city"]).fit(coercer.transform(X))
    batch = enc.transform(coercer.transform(X))
    assert len(X) > LOOP_ROWS
    rows = pd.concat([enc.transform(coercer.transform(X.iloc[[i]])) for i in range(len(X))])
    for col in ("plan", "city"):
        assert batch[col].astype(object).where(batch[col].notna(), None).tolist() == \
            rows[col].astype(object).where(rows[col].notna(), None).tolist()
    assert batch["plan"].iloc[10] == "pro" and pd.isna(batch["plan"].iloc[11])


@pytest.mark.parametrize("col", [
    pd.Series([1, 1.0, True, 0.0, -0.0, False, "a ", None, np.nan, pd.NA] * 60, dtype=object),
    pd.Series([" a", "b", "", None, pd.NA, np.nan, "c "] * 60, dtype=object),
    pd.Series(["a", "b", None] * 200, dtype="str"),
    pd.Series(pd.Categorical(["x", "y", None] * 200)),
    pd.Series(pd.Categorical([1, 2, None] * 200)),
], ids=["mixed-objects", "text-with-missing", "pandas-str", "text-categorical", "int-categorical"])
def test_batch_cells_equal_request_cells(col):
    """Trimmed text and level codes of a whole column (factorised when it is text) equal those of the
    same cells sent in requests of 100 rows (a plain loop), for every kind of column."""
    assert len(col) > LOOP_ROWS
    chunks = range(0, len(col), 100)
    batch = text_cells(col)
    requests = np.concatenate([text_cells(col.iloc[i:i + 100]) for i in chunks])
    assert [None if pd.isna(v) else v for v in batch] == [None if pd.isna(v) else v for v in requests]
    values = col.to_numpy(dtype=object)
    enc = CategoryEncoder(categorical=["c"], min_count=1).fit(pd.DataFrame({"c": values}))
    np.testing.assert_array_equal(enc._codes("c", values),
                                  np.concatenate([enc._codes("c", values[i:i + 100]) for i in chunks]))


def test_name_groups_by_last_word():
    """Columns group by the last word of their names (snake_case, camelCase, spaces); singletons and
    numbered columns stay out, and a new name never shadows a column."""
    assert name_groups(["total_day_charge", "total_eve_charge", "tenure", "x1", "x2"]) == {
        "sum_charge": ["total_day_charge", "total_eve_charge"]}
    assert name_groups(["MonthlyCharges", "TotalCharges", "sum_charges", "day calls", "night-calls"]) == {
        "sum_charges_": ["MonthlyCharges", "TotalCharges", "sum_charges"], "sum_calls": ["day calls", "night-calls"]}
    assert name_groups(["tenure", "age"]) == {}
    assert name_groups(["a_fee", "b_fee"], taken=["sum_fee", "plan"]) == {"sum_fee_": ["a_fee", "b_fee"]}


def test_sum_names_avoid_one_hot_columns():
    """A categorical column ``sum`` with a level ``fee`` one-hot encodes to ``sum_fee``: the sum of
    the fee columns takes another name, so every family's encoded feature names stay unique."""
    schema = TableSchema.model_validate({"label": "y", "positive": "1", "negative": "0",
                                         "numeric": {"a_fee": {}, "b_fee": {}},
                                         "categorical": {"sum": ["fee", "other"]}})
    assert schema.sum_groups() == {"sum_fee_": ["a_fee", "b_fee"]}
    X = pd.DataFrame({"a_fee": [1.0, 2.0] * 20, "b_fee": [3.0, 4.0] * 20, "sum": ["fee", "other"] * 20})
    y = np.array([0, 1] * 20)
    fitted = inference_pipeline(build_pipeline(schema, "logistic_regression", "none", 0,
                                               sums=schema.sum_groups()).fit(X, y))
    names = kept_features(fitted)
    assert "sum_fee" in names and "sum_fee_" in names and len(set(names)) == len(names)


def test_group_sums_add_columns_and_keep_blanks():
    """Each group's row sum is a new column (blank when a part is blank); the inputs pass through."""
    X = pd.DataFrame({"a_min": [1.0, 2.0, np.nan], "b_min": [10.0, 20.0, 30.0], "age": [5.0, 6.0, 7.0]})
    step = clone(GroupSums(groups={"sum_min": ["a_min", "b_min"]})).fit(X)
    out = step.transform(X)
    assert list(out.columns) == ["a_min", "b_min", "age", "sum_min"]
    np.testing.assert_array_equal(out["sum_min"].to_numpy(), [11.0, 22.0, np.nan])
    pd.testing.assert_frame_equal(out[X.columns], X)
    assert list(step.get_feature_names_out()) == list(out.columns)
    with pytest.raises(ValueError, match="input lacks column.*b_min"):
        GroupSums(groups={"sum_min": ["a_min", "b_min"]}).fit(X.drop(columns="b_min"))


def test_numeric_basis_is_scikit_learns_spline_or_the_identity():
    """kind='spline' gives SplineTransformer's cubic basis on quantile knots with linear
    extrapolation (names included); kind='linear' passes the columns through."""
    from sklearn.preprocessing import SplineTransformer

    from churn.modeling.features import NumericBasis

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.exponential(size=300), rng.integers(0, 2, 300)])
    wide = np.array([[50.0, 1.0]])  # beyond the training range: extended linearly
    ref = SplineTransformer(n_knots=4, degree=3, knots="quantile", extrapolation="linear").fit(X)
    basis = NumericBasis("spline").fit(X)
    np.testing.assert_array_equal(basis.transform(wide), ref.transform(wide))
    assert np.isfinite(basis.transform(X)).all() and basis.transform(X).shape == (300, 2 * (4 + 2))
    names = ["tenure", "senior"]
    assert list(basis.get_feature_names_out(names)) == list(ref.get_feature_names_out(names))
    np.testing.assert_array_equal(NumericBasis("linear").fit(X).transform(X), X)
    with pytest.raises(ValueError, match="numeric_basis must be"):
        NumericBasis("cubic").fit(X)


def test_numeric_basis_grid_key_lets_logistic_regression_bend():
    """'numeric_basis' in a logistic regression grid switches its numeric columns to splines; on a
    U-shaped risk the spline pipeline ranks far better than the straight line."""
    from sklearn.metrics import roc_auc_score

    from churn.modeling.pipeline import grid_for

    rng = np.random.default_rng(1)
    schema = TableSchema(id=None, label="Churn", positive="Yes", negative="No", numeric={"tenure": {}},
                         categorical={"plan": ["a", "b"]})
    X = pd.DataFrame({"tenure": rng.uniform(-3, 3, 2000), "plan": rng.choice(["a", "b"], 2000)})
    y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-(X["tenure"] ** 2 - 3)))).astype(int)
    grid = grid_for("logistic_regression", {"numeric_basis": ["linear", "spline"]})
    assert "encode__num__basis__kind" in grid[0]
    scores = {}
    for kind in ("linear", "spline"):
        pipe = build_pipeline(schema, "logistic_regression", "none", 0).set_params(encode__num__basis__kind=kind)
        scores[kind] = roc_auc_score(y, pipe.fit(X, y).predict_proba(X)[:, 1])
    assert scores["spline"] > scores["linear"] + 0.2
