"""Feature steps that drop into scikit-learn and imbalanced-learn pipelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from churn.serving.rules import LOOP_ROWS, category_cells, number_cells, text_cells, text_factors


class TableCoercer(TransformerMixin, BaseEstimator):
    """Coerce a raw churn table to model-ready dtypes.

    Numeric columns become float64 (text such as ``" "`` becomes NaN, imputed later);
    categorical columns become object with NaN for blanks and missing values, or, when they
    come as pandas categories (the clean dataset, the batch scorer), categories with trimmed
    labels and blanks missing: the same cells, without a Python object per row. So a fitted
    pipeline accepts rows as they come from a CSV reader as well as from the clean dataset.
    """

    def __init__(self, numeric: list[str] | tuple[str, ...] = (), categorical: list[str] | tuple[str, ...] = ()):
        self.numeric = numeric
        self.categorical = categorical

    def fit(self, X: pd.DataFrame, y: object = None) -> TableCoercer:
        missing = [c for c in [*self.numeric, *self.categorical] if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks column(s): {', '.join(missing)}")
        self.feature_names_in_ = np.asarray([*self.numeric, *self.categorical], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "feature_names_in_")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"input lacks column(s): {', '.join(missing)}")
        out = {c: pd.Series(number_cells(X[c])[0], index=X.index) for c in self.numeric}
        # text columns become object, not pandas' inferred str dtype: the steps after this one
        # read the cells as Python objects, and a round trip through Arrow strings cost a third
        # of a batch's time; category columns stay categories (no Python object per row)
        for c in self.categorical:
            categories = category_cells(X[c])
            out[c] = (pd.Series(categories, index=X.index) if categories is not None
                      else pd.Series(text_cells(X[c]), index=X.index, dtype=object))
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(self.feature_names_in_, dtype=object)


class GroupSums(TransformerMixin, BaseEstimator):
    """Add one column per group: the row sum of the group's numeric columns (blank when any
    of them is blank). Usage often comes split into parts (day, evening, night and
    international minutes or charges); a tree splits on one column at a time, so the total
    is a feature it cannot build itself. The train job keeps this step only when
    cross-validation on the training rows gains from it (:mod:`churn.modeling.screen`); the
    groups come from the column names (:meth:`churn.config.TableSchema.sum_groups`).
    scikit-learn's ``FunctionTransformer`` could add the columns, but its function would be
    pickled code; this step saves as plain data.
    """

    def __init__(self, groups: dict[str, list[str]] | None = None):
        self.groups = groups

    def fit(self, X: pd.DataFrame, y: object = None) -> GroupSums:
        missing = sorted({c for cols in (self.groups or {}).values() for c in cols} - set(X.columns))
        if missing:
            raise ValueError(f"input lacks column(s): {', '.join(missing)}")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "feature_names_in_")
        # one new frame from the column arrays: a third of the time of copying and inserting, per request
        out = {c: X[c].array if isinstance(X[c].dtype, pd.CategoricalDtype) else X[c].to_numpy()
               for c in X.columns}  # categories stay categories
        for name, cols in (self.groups or {}).items():
            out[name] = np.sum([np.asarray(out[c], dtype=np.float64) for c in cols], axis=0)  # NaN if a part is
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        return np.asarray([*self.feature_names_in_, *(self.groups or {})], dtype=object)


class CategoryEncoder(TransformerMixin, BaseEstimator):
    """Text columns → pandas ``category`` columns, for models that split on categories natively
    (``HistGradientBoostingClassifier`` reads them with ``categorical_features="from_dtype"``);
    every other column passes through as it is.

    Each of the ``categorical`` columns keeps its ``max_levels`` most frequent levels seen at
    least ``min_count`` times; every other level, and any level first seen at predict time,
    becomes ``"__other__"``. Blanks stay missing. A column left with more than
    ``max_native_levels`` levels becomes its sorted level codes as numbers instead: split
    natively, many levels overfit (the MLC table's 51 states, 5-fold CV on the seed-0 training
    split, 15 leaves: ROC AUC 0.910 native, 0.917 as codes). scikit-learn's ``OrdinalEncoder``
    groups rare levels too, but gives every column as float codes; and a ``ColumnTransformer``
    around it costs about 10 ms per served request, where this costs well under one.
    """

    OTHER = "__other__"

    def __init__(self, categorical: list[str] | tuple[str, ...] = (), max_levels: int = 64, min_count: int = 5,
                 max_native_levels: int = 16):
        self.categorical = categorical
        self.max_levels = max_levels
        self.min_count = min_count
        self.max_native_levels = max_native_levels

    def fit(self, X: pd.DataFrame, y: object = None) -> CategoryEncoder:
        X = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.levels_ = {}
        for col in self.categorical:
            counts = X[col].dropna().astype(str).value_counts(sort=True)
            counts = counts[counts >= self.min_count].head(self.max_levels)
            self.levels_[str(col)] = sorted(str(v) for v in counts.index)
        self.codes_ = {col: {level: i for i, level in enumerate(levels)} for col, levels in self.levels_.items()}
        return self

    def fit_counts(self, counts: dict[str, pd.Series], columns: list[str] | np.ndarray) -> CategoryEncoder:
        """Fit from each categorical column's level counts (level -> rows, blanks left out) instead of
        the rows: for counts summed over data that never sits in one process (the full-data fit counts
        the levels of every train row on the workers). ``columns``: every input column, in order.
        Levels are ranked by count, ties by level, so the result does not depend on the order the
        partial counts were summed in."""
        self.feature_names_in_ = np.asarray(list(columns), dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.levels_ = {}
        for col in self.categorical:
            got = counts.get(str(col), pd.Series(dtype="int64"))
            ranked = sorted(((int(n), str(level)) for level, n in got.items() if n >= self.min_count),
                            key=lambda t: (-t[0], t[1]))[: self.max_levels]
            self.levels_[str(col)] = sorted(level for _, level in ranked)
        self.codes_ = {col: {level: i for i, level in enumerate(levels)} for col, levels in self.levels_.items()}
        return self

    def _codes(self, col: str, values: pd.Series | np.ndarray) -> np.ndarray:
        """Level code per cell: its level's position, ``len(levels)`` for any other level, -1 for blanks.

        A request's few cells go through a plain loop (far cheaper than pandas for one served
        row); a batch is factorised first, so each distinct value is looked up once; a
        ``category`` column has its categories looked up and its rows read by their codes.
        """
        lookup, other = self.codes_[col], len(self.levels_[col])

        def code(v: object) -> int:
            if isinstance(v, str):
                return lookup.get(v, other)
            if v is None or pd.isna(v):  # None, NaN, pd.NA, NaT
                return -1
            return lookup.get(str(v), other)

        if isinstance(values, pd.Series) and isinstance(values.dtype, pd.CategoricalDtype):
            factors = values.cat.codes.to_numpy(), np.asarray(values.cat.categories, dtype=object)
        else:
            values = np.asarray(values, dtype=object)
            factors = text_factors(values) if len(values) > LOOP_ROWS else None
        if factors is None:
            return np.fromiter((code(v) for v in values), np.int64, len(values))
        positions, uniques = factors
        codes = np.array([*(code(v) for v in uniques), -1], np.int64)
        return codes[positions]  # position -1 (missing) takes the trailing -1

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        check_is_fitted(self, "levels_")
        X = pd.DataFrame(X)
        out = {}
        for col in self.feature_names_in_:
            if col not in self.levels_:
                out[col] = X[col].to_numpy()
                continue
            levels = self.levels_[col]
            codes = self._codes(col, X[col])
            if len(levels) > self.max_native_levels:
                out[col] = np.where(codes < 0, np.nan, codes.astype(np.float64))
            else:
                out[col] = pd.Categorical.from_codes(codes, categories=pd.Index([*levels, self.OTHER], dtype=object))
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "levels_")
        return np.asarray(self.feature_names_in_, dtype=object)


class NumericBasis(TransformerMixin, BaseEstimator):
    """The numeric columns as they are (``kind="linear"``) or as cubic B-splines (``"spline"``).

    Splines let a linear model bend each number's effect (churn falls steeply over a customer's
    first months, then flattens), so logistic regression becomes an additive model. The switch
    is a grid parameter (``numeric_basis`` in a job's grid) so cross-validation decides; it wraps
    scikit-learn's ``SplineTransformer`` only because a grid in YAML needs a name, not an object.
    Knots sit at quantiles and the basis extends linearly past them (no flat tails for scores
    beyond the training range). Runs after imputation: no NaN reaches it.
    """

    def __init__(self, kind: str = "linear", n_knots: int = 4):
        self.kind = kind
        self.n_knots = n_knots

    def fit(self, X: np.ndarray, y: object = None) -> NumericBasis:
        from sklearn.preprocessing import SplineTransformer

        if self.kind not in ("linear", "spline"):
            raise ValueError(f"numeric_basis must be 'linear' or 'spline', not {self.kind!r}")
        X = np.asarray(X, dtype=np.float64)
        self.n_features_in_ = X.shape[1]
        self.spline_ = (SplineTransformer(n_knots=self.n_knots, degree=3, knots="quantile",
                                          extrapolation="linear").fit(X)
                        if self.kind == "spline" and X.shape[1] else None)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        X = np.asarray(X, dtype=np.float64)
        return X if self.spline_ is None else self.spline_.transform(X)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "n_features_in_")
        names = np.asarray(input_features if input_features is not None
                           else [f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        return names if self.spline_ is None else self.spline_.get_feature_names_out(names)


def numeric_matrix(X: object) -> np.ndarray:
    """``X`` as a float matrix; category columns as their codes, blanks as NaN (for the selectors)."""
    if isinstance(X, pd.DataFrame):
        cols = [X[c].cat.codes.to_numpy(np.float64) if isinstance(X[c].dtype, pd.CategoricalDtype)
                else X[c].to_numpy(np.float64, na_value=np.nan) for c in X.columns]
        out = np.column_stack(cols) if cols else np.zeros((len(X), 0))
        for j, c in enumerate(X.columns):
            if isinstance(X[c].dtype, pd.CategoricalDtype):
                out[X[c].cat.codes.to_numpy() < 0, j] = np.nan
        return out
    return np.asarray(X, dtype=float)


class _ColumnMask(TransformerMixin, BaseEstimator):
    """A selector that keeps the columns in its fitted boolean ``support_`` (a DataFrame stays one,
    so category columns reach a native-categorical model as categories)."""

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "support_")
        if isinstance(X, pd.DataFrame):
            return X.iloc[:, self.support_]
        return np.asarray(X)[:, self.support_]

    def get_support(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "support_")
        names = np.asarray(input_features if input_features is not None
                           else [f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        return names[self.support_]


class CorrelationFilter(_ColumnMask):
    """Drop one column of every pair whose |Pearson r| on the training rows exceeds ``threshold``.

    Columns are visited left to right; a column is dropped when it is too correlated with an
    earlier column that is kept. ``threshold=None`` keeps every column (so the filter can be
    switched off inside a grid search).
    """

    def __init__(self, threshold: float | None = None):
        self.threshold = threshold

    def fit(self, X: np.ndarray, y: object = None) -> CorrelationFilter:
        X = numeric_matrix(X)
        self.n_features_in_ = X.shape[1]
        keep = np.ones(X.shape[1], bool)
        if self.threshold is not None and X.shape[1] > 1:
            std = X.std(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = np.abs(np.corrcoef(X, rowvar=False))
            corr[~np.isfinite(corr)] = 0.0
            for j in range(X.shape[1]):
                if std[j] == 0:
                    continue
                earlier = np.flatnonzero(keep[:j])
                if len(earlier) and corr[j, earlier].max() > self.threshold:
                    keep[j] = False
        self.support_ = keep
        return self


class ImportanceSelector(_ColumnMask):
    """Keep the columns whose random-forest impurity importance reaches ``threshold``.

    ``threshold`` is a number, ``"mean"``, ``"median"`` or ``"<k>*mean"`` (as in
    ``SelectFromModel``); ``None`` keeps every column. The ranking forest is small and seeded.
    """

    def __init__(self, threshold: float | str | None = None, n_estimators: int = 50, random_state: int = 0):
        self.threshold = threshold
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> ImportanceSelector:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.feature_selection import SelectFromModel

        X = numeric_matrix(X)
        self.n_features_in_ = X.shape[1]
        if self.threshold is None:
            self.support_ = np.ones(X.shape[1], bool)
            self.importances_ = np.full(X.shape[1], np.nan)
            return self
        forest = RandomForestClassifier(n_estimators=self.n_estimators, max_depth=8, random_state=self.random_state,
                                        n_jobs=1)
        selector = SelectFromModel(forest, threshold=self.threshold).fit(X, y)
        self.support_ = selector.get_support()
        if not self.support_.any():  # never select nothing
            self.support_[np.argmax(selector.estimator_.feature_importances_)] = True
        self.importances_ = selector.estimator_.feature_importances_
        return self
