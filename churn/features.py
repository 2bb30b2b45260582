"""Feature steps that drop into scikit-learn and imbalanced-learn pipelines."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted


class TableCoercer(TransformerMixin, BaseEstimator):
    """Coerce a raw churn table to model-ready dtypes.

    Numeric columns become float64 (text such as ``" "`` becomes NaN, imputed later);
    categorical columns become object with NaN for blanks and missing values. So a fitted
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
        out = {}
        for c in self.numeric:
            col = X[c]
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                col = pd.to_numeric(col.astype("string").str.strip().replace("", None), errors="coerce")
            out[c] = col.astype("float64").to_numpy(na_value=np.nan) if hasattr(col, "to_numpy") else col
        for c in self.categorical:
            col = X[c].astype("string").str.strip()
            col = col.where(col != "", pd.NA)
            out[c] = col.astype(object).where(col.notna(), np.nan).to_numpy()
        return pd.DataFrame(out, index=X.index)

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_in_")
        return np.asarray(self.feature_names_in_, dtype=object)
