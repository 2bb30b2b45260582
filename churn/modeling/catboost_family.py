"""CatBoost as a scikit-learn classifier that saves without pickle (imported where models are served).

:class:`CatBoostClassifier` fits a ``catboost.CatBoostClassifier`` on the frame
:class:`~churn.modeling.features.CategoryEncoder` gives: numbers with blanks, and pandas
``category`` columns, which become CatBoost ``cat_features`` (encoded by CatBoost's ordered target
statistics, its defining feature). It stops early on a seeded, stratified share of its own
training rows, as :class:`~churn.modeling.boosting.XGBoostClassifier` does. Its saved state holds the
model in CatBoost's own binary format (``save_model(..., format="cbm")``, loaded back with
``load_model(blob=...)``), not a pickle: skops stores plain bytes, so the trusted-type list names
this class and no CatBoost type.

catboost itself is imported on first use, so pipelines of other families neither load nor need it.
No dask, no pydantic here.
"""

from __future__ import annotations

import os
import tempfile
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions  # what every sklearn estimator declares with
from sklearn.utils.validation import check_is_fitted

from churn.modeling.boosting import BoosterMixin

MODEL_FORMAT = "cbm"  # CatBoost's own binary model format


def _catboost() -> Any:
    import catboost

    return catboost


class CatBoostClassifier(BoosterMixin, ClassifierMixin, BaseEstimator):
    """Binary gradient-boosted oblivious trees from CatBoost, categories as ``cat_features``.

    * ``n_estimators`` is the most boosting rounds (CatBoost's ``iterations``); with
      ``early_stopping_rounds`` and ``validation_fraction`` set, a seeded stratified
      ``validation_fraction`` of the training rows is held out and boosting stops once its log loss
      has not improved for that many rounds (``None`` for either: all rounds on every row). The
      model keeps the trees up to the best round (``use_best_model``).
    * ``depth``, ``learning_rate``, ``l2_leaf_reg``, ``border_count``, ``max_ctr_complexity`` (how many
      categorical features one target statistic may combine): CatBoost's own.
    * ``class_weight="balanced"`` weights the positive rows by negatives / positives of the
      training rows, the held-out rows too (so early stopping watches the loss being minimised).
    * The input frame's ``category`` columns are CatBoost's categorical features: each row's level
      is passed as its position in the categories seen at fit (``-1`` for a blank), whatever order a
      later frame's categories come in; CatBoost encodes them with ordered target statistics.
    * ``n_jobs`` is CatBoost's ``thread_count`` for fitting and predicting (1: the search runs one fit
      per worker thread).

    Fitted: ``model_`` (a ``catboost.CatBoostClassifier``), ``best_iteration_`` (0-based:
    ``best_iteration_ + 1`` trees), ``categories_`` (category column → its levels), ``classes_``,
    ``n_features_in_``, ``feature_names_in_`` (for a frame), ``scale_pos_weight_``.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "depth": [Interval(Integral, 1, 16, closed="both")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "l2_leaf_reg": [Interval(Real, 0, None, closed="left")],
        "n_estimators": [Interval(Integral, 1, None, closed="left")],
        "early_stopping_rounds": [Interval(Integral, 1, None, closed="left"), None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "class_weight": [StrOptions({"balanced"}), None],
        "border_count": [Interval(Integral, 1, 65535, closed="both")],
        "max_ctr_complexity": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "n_jobs": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, depth: int = 6, learning_rate: float = 0.1, l2_leaf_reg: float = 3.0, n_estimators: int = 500,
                 early_stopping_rounds: int | None = 20, validation_fraction: float | None = 0.1,
                 class_weight: str | None = None, border_count: int = 254, max_ctr_complexity: int = 4,
                 random_state: int | None = None, n_jobs: int = 1):
        self.depth = depth
        self.learning_rate = learning_rate
        self.l2_leaf_reg = l2_leaf_reg
        self.n_estimators = n_estimators
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction
        self.class_weight = class_weight
        self.border_count = border_count
        self.max_ctr_complexity = max_ctr_complexity
        self.random_state = random_state
        self.n_jobs = n_jobs

    # ------------------------------------------------------------------ fitting
    def model_params(self) -> dict[str, Any]:
        """The ``catboost.CatBoostClassifier`` parameters these settings stand for (quiet, no files written)."""
        return {"loss_function": "Logloss", "eval_metric": "Logloss", "iterations": self.n_estimators,
                "depth": self.depth, "learning_rate": self.learning_rate, "l2_leaf_reg": self.l2_leaf_reg,
                "border_count": self.border_count,
                "max_ctr_complexity": self.max_ctr_complexity, "random_seed": self._seed(), "thread_count": self.n_jobs,
                "allow_writing_files": False, "verbose": False}

    def fit(self, X: Any, y: Any) -> CatBoostClassifier:
        self._validate_params()  # scikit-learn's check of _parameter_constraints
        cb = _catboost()
        X = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=np.float64))
        self._set_features(X)
        self.categories_ = {str(c): [str(v) for v in X[c].cat.categories] for c in X.columns
                            if isinstance(X[c].dtype, pd.CategoricalDtype)}
        codes = self._set_classes(y)
        data = self._frame(X)
        cats = list(self.categories_)
        model = cb.CatBoostClassifier(**self.model_params())
        if self.early_stopping_rounds is not None and self.validation_fraction is not None:
            X_fit, X_val, y_fit, y_val = train_test_split(data, codes, test_size=self.validation_fraction,
                                                          stratify=codes, random_state=self._seed())
            model.fit(cb.Pool(X_fit, y_fit, cat_features=cats, weight=self._weights(y_fit)),
                      eval_set=cb.Pool(X_val, y_val, cat_features=cats, weight=self._weights(y_val)),
                      early_stopping_rounds=self.early_stopping_rounds, use_best_model=True)
            self.best_iteration_ = int(model.get_best_iteration())
        else:
            model.fit(cb.Pool(data, codes, cat_features=cats, weight=self._weights(codes)))
            self.best_iteration_ = int(model.tree_count_) - 1
        self.model_ = model
        return self

    def _weights(self, codes: np.ndarray) -> np.ndarray | None:
        return np.where(codes == 1, self.scale_pos_weight_, 1.0) if self.scale_pos_weight_ != 1.0 else None

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """``X`` as CatBoost takes it: each category column as the integer position of its level
        among ``categories_`` (-1 for a blank or an unseen level), numbers as float."""
        out = {}
        for col in X.columns:
            levels = self.categories_.get(str(col))
            if levels is None:
                out[col] = pd.to_numeric(X[col], errors="raise").to_numpy(dtype=np.float64)
            else:
                values = X[col]
                if not (isinstance(values.dtype, pd.CategoricalDtype)
                        and [str(v) for v in values.cat.categories] == levels):
                    values = pd.Categorical(values.astype(object).where(values.notna(), None), categories=levels)
                out[col] = np.asarray(pd.Series(values).cat.codes, dtype=np.int64)
        return pd.DataFrame(out, index=X.index)

    # ------------------------------------------------------------------ predicting
    def predict_proba(self, X: Any) -> np.ndarray:
        """``[1 - p, p]`` per row, ``p`` the probability of ``classes_[1]``."""
        check_is_fitted(self, "model_")
        X = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=np.float64))
        self._check_width(X)
        if self.categories_:
            X = self._frame(X)
        p = np.asarray(self.model_.predict(X, prediction_type="Probability", thread_count=self.n_jobs),
                       dtype=np.float64)[:, 1]
        return np.column_stack([1.0 - p, p])

    # ------------------------------------------------------------------ saving
    def __getstate__(self) -> dict[str, Any]:
        """Parameters and fitted attributes; the model as CatBoost's own binary format (no pickle)."""
        state = {k: v for k, v in self.__dict__.items() if k != "model_"}
        if "model_" in self.__dict__:
            # save_model writes only to a path (CatBoost has no public bytes writer)
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, f"model.{MODEL_FORMAT}")
                self.model_.save_model(path, format=MODEL_FORMAT)
                with open(path, "rb") as fh:
                    state["model_cbm_"] = fh.read()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        raw = state.pop("model_cbm_", None)
        self.__dict__.update(state)
        if raw is not None:
            self.model_ = _catboost().CatBoostClassifier().load_model(blob=bytes(raw))
