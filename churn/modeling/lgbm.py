"""LightGBM as a scikit-learn classifier that saves without pickle (imported where models are served).

:class:`LightGBMClassifier` fits a ``lightgbm.Booster`` on the frame
:class:`~churn.modeling.features.CategoryEncoder` gives (numbers with blanks, pandas ``category``
columns that LightGBM splits natively, its categories kept in the model), stopping early on a
seeded, stratified share of its own training rows, as :class:`~churn.modeling.boosting.XGBoostClassifier`
does. Its saved state holds the booster as LightGBM's own text model format
(``Booster.model_to_string()``, loaded back with ``lightgbm.Booster(model_str=...)``), not a pickle:
skops stores a plain string, so the trusted-type list names this class and no LightGBM type.

lightgbm itself is imported on first use, so pipelines of other families neither load nor need it.
No dask, no pydantic here.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions  # what every sklearn estimator declares with
from sklearn.utils.validation import check_is_fitted

from churn.modeling.boosting import BoosterMixin


def _lightgbm() -> Any:
    import lightgbm

    return lightgbm


class LightGBMClassifier(BoosterMixin, ClassifierMixin, BaseEstimator):
    """Binary gradient-boosted trees from LightGBM (leaf-wise growth, native categories).

    * ``n_estimators`` is the most boosting rounds; with ``early_stopping_rounds`` and
      ``validation_fraction`` set, a seeded stratified ``validation_fraction`` of the training rows
      is held out and boosting stops once its log loss has not improved for that many rounds
      (``None`` for either: all ``n_estimators`` rounds on every row). The booster keeps the trees
      up to the best round.
    * ``num_leaves``, ``min_child_samples``, ``reg_lambda``, ``learning_rate``, ``max_bin``: LightGBM's
      ``num_leaves``, ``min_data_in_leaf``, ``lambda_l2``, ``learning_rate``, ``max_bin``.
    * ``class_weight="balanced"`` sets ``scale_pos_weight`` to negatives / positives of the
      training rows (and weights the held-out rows the same, so early stopping watches the loss
      being minimised).
    * ``pandas`` ``category`` columns are split by LightGBM's categorical splits (``max_cat_to_onehot``
      and fewer levels: one level against the rest); their categories are saved with the model
      and a frame's categories are matched to them by name at predict time.
    * ``n_jobs`` is LightGBM's ``num_threads`` for fitting and predicting (1: the search runs one fit
      per worker thread).

    Fitted: ``booster_`` (the trees up to the best round), ``best_iteration_`` (0-based, as
    :class:`~churn.modeling.boosting.XGBoostClassifier` counts: ``best_iteration_ + 1`` trees), ``classes_``,
    ``n_features_in_``, ``feature_names_in_`` (for a frame), ``scale_pos_weight_``.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "num_leaves": [Interval(Integral, 2, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "min_child_samples": [Interval(Integral, 1, None, closed="left")],
        "reg_lambda": [Interval(Real, 0, None, closed="left")],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "early_stopping_rounds": [Interval(Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "class_weight": [StrOptions({"balanced"}), None],
        "max_cat_to_onehot": [Interval(Integral, 1, None, closed="left")],
        "max_bin": [Interval(Integral, 2, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "n_jobs": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, num_leaves: int = 31, learning_rate: float = 0.05, min_child_samples: int = 20,
                 reg_lambda: float = 0.0, n_estimators: int = 500, early_stopping_rounds: int | None = 20,
                 validation_fraction: float | None = 0.1, class_weight: str | None = None,
                 max_cat_to_onehot: int = 4, max_bin: int = 255, random_state: int | None = None, n_jobs: int = 1):
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.min_child_samples = min_child_samples
        self.reg_lambda = reg_lambda
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.max_cat_to_onehot = max_cat_to_onehot
        self.max_bin = max_bin
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ fitting
    def booster_params(self, scale_pos_weight: float = 1.0) -> dict[str, Any]:
        """The LightGBM training parameters these settings stand for (one thread, deterministic, quiet)."""
        return {"objective": "binary", "metric": "binary_logloss", "num_leaves": self.num_leaves,
                "learning_rate": self.learning_rate, "min_data_in_leaf": self.min_child_samples,
                "lambda_l2": self.reg_lambda, "max_cat_to_onehot": self.max_cat_to_onehot, "max_bin": self.max_bin,
                "scale_pos_weight": scale_pos_weight, "num_threads": self.n_jobs, "seed": self._seed(),
                # row-wise histograms: no timing test at the start of each fit (and the same trees every run)
                "deterministic": True, "force_row_wise": True, "verbosity": -1}

    def fit(self, X: Any, y: Any) -> LightGBMClassifier:
        self._validate_params()  # scikit-learn's check of _parameter_constraints
        lgb = _lightgbm()
        X = X if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=np.float64)
        self._set_features(X)
        codes = self._set_classes(y)
        params = self.booster_params(self.scale_pos_weight_)
        data_params = {"max_bin": self.max_bin, "verbosity": -1}
        if self.early_stopping_rounds is not None and self.validation_fraction is not None:
            X_fit, X_val, y_fit, y_val = train_test_split(X, codes, test_size=self.validation_fraction,
                                                          stratify=codes, random_state=self._seed())
            train = lgb.Dataset(X_fit, y_fit, params=data_params, free_raw_data=True)
            held_out = lgb.Dataset(X_val, y_val, weight=np.where(y_val == 1, self.scale_pos_weight_, 1.0),
                                   reference=train, params=data_params)
            booster = lgb.train(params, train, num_boost_round=self.n_estimators, valid_sets=[held_out],
                                callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
            best = int(booster.best_iteration) - 1  # LightGBM counts rounds from 1
        else:
            booster = lgb.train(params, lgb.Dataset(X, codes, params=data_params), num_boost_round=self.n_estimators)
            best = booster.current_iteration() - 1
        self.best_iteration_ = best
        # the trees up to the best round only, through LightGBM's own text format (as it is saved)
        self.booster_ = lgb.Booster(model_str=booster.model_to_string(num_iteration=best + 1))
        return self

    # ------------------------------------------------------------------ predicting
    def predict_proba(self, X: Any) -> np.ndarray:
        """``[1 - p, p]`` per row, ``p`` the probability of ``classes_[1]``."""
        check_is_fitted(self, "booster_")
        if not isinstance(X, pd.DataFrame):
            X = np.asarray(X, dtype=np.float64)
        self._check_width(X)
        p = np.asarray(self.booster_.predict(X, num_threads=self.n_jobs), dtype=np.float64)
        return np.column_stack([1.0 - p, p])

    # ------------------------------------------------------------------ saving
    def __getstate__(self) -> dict[str, Any]:
        """Parameters and fitted attributes; the booster as LightGBM's own text model (no pickle)."""
        state = {k: v for k, v in self.__dict__.items() if k != "booster_"}
        if "booster_" in self.__dict__:
            state["booster_text_"] = self.booster_.model_to_string()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        text = state.pop("booster_text_", None)
        self.__dict__.update(state)
        if text is not None:
            self.booster_ = _lightgbm().Booster(model_str=text)
