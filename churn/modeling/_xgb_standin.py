"""STAND-IN, dropped at merge: a minimal ``XGBoostClassifier`` so the full-data fit can be tested in
this branch before the real ``xgboost`` family (:mod:`churn.modeling.boosting`) is merged.

Same surface as the real one as far as the full-data fit uses it: a scikit-learn estimator over the
DataFrame of :class:`~churn.modeling.features.CategoryEncoder` (numbers and pandas categories), grid
keys ``max_depth``, ``learning_rate``, ``min_child_weight``, ``class_weight="balanced"`` turned into
``scale_pos_weight``; fitted attribute ``booster_``; :meth:`from_booster` wraps a trained booster.
The booster is kept as XGBoost's UBJ bytes in the saved state (no pickle of the booster).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.base import BaseEstimator, ClassifierMixin


class XGBoostClassifier(ClassifierMixin, BaseEstimator):
    """Gradient-boosted trees by XGBoost (hist, native categories), ``n_estimators`` rounds."""

    def __init__(self, max_depth: int = 6, learning_rate: float = 0.1, min_child_weight: float = 1.0,
                 n_estimators: int = 100, class_weight: str | None = None, random_state: int | None = None,
                 n_jobs: int = 1):
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_child_weight = min_child_weight
        self.n_estimators = n_estimators
        self.class_weight = class_weight
        self.random_state = random_state
        self.n_jobs = n_jobs

    def fit(self, X: pd.DataFrame, y: Any) -> XGBoostClassifier:
        y = np.asarray(y).astype(int)
        params = {"objective": "binary:logistic", "tree_method": "hist", "max_depth": self.max_depth,
                  "eta": self.learning_rate, "min_child_weight": self.min_child_weight,
                  "seed": self.random_state or 0, "nthread": self.n_jobs}
        if self.class_weight == "balanced":
            params["scale_pos_weight"] = float((y == 0).sum() / max((y == 1).sum(), 1))
        data = xgb.DMatrix(X, y, enable_categorical=True, nthread=self.n_jobs)
        self.booster_ = xgb.train(params, data, num_boost_round=self.n_estimators)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        return self

    @classmethod
    def from_booster(cls, booster: xgb.Booster, **params: Any) -> XGBoostClassifier:
        model = cls(**params)
        model.booster_ = booster
        model.classes_ = np.array([0, 1])
        model.n_features_in_ = booster.num_features()
        return model

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self.booster_.predict(xgb.DMatrix(X, enable_categorical=True, nthread=self.n_jobs))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if "booster_" in state:
            state["booster_"] = bytes(state["booster_"].save_raw("ubj"))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("booster_"), bytes | bytearray):
            booster = xgb.Booster()
            booster.load_model(bytearray(state["booster_"]))
            state = {**state, "booster_": booster}
        self.__dict__.update(state)
