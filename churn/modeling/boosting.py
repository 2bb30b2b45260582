"""XGBoost as a scikit-learn classifier that saves without pickle (imported where models are served).

:class:`XGBoostClassifier` fits an ``xgboost.Booster`` on the frame :class:`~churn.modeling.features.CategoryEncoder`
gives (numbers with blanks, pandas ``category`` columns split natively), stopping early on a seeded,
stratified share of its own training rows, as ``HistGradientBoostingClassifier`` does. Its saved
state holds the booster in XGBoost's own UBJSON format (``Booster.save_raw("ubj")``), not a pickle:
skops stores plain bytes and the class rebuilds the booster from them, so the trusted-type list names
this class and no XGBoost type. :meth:`XGBoostClassifier.from_booster` wraps a booster trained
elsewhere (the full-data ``xgboost.dask`` fit) on the same encoded columns.

xgboost itself is imported on first use (it takes about a second), so pipelines of other families
neither load nor need it. No dask, no pydantic here.
"""

from __future__ import annotations

import json
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval, StrOptions  # what every sklearn estimator declares with
from sklearn.utils.validation import check_is_fitted

BOOSTER_FORMAT = "ubj"  # XGBoost's documented, backward-compatible model format (UBJSON)


def _xgboost() -> Any:
    import xgboost

    return xgboost


class BoosterMixin:
    """What the gradient-boosting wrappers (XGBoost here, LightGBM in :mod:`churn.modeling.lgbm`,
    CatBoost in :mod:`churn.modeling.catboost_family`) share around their library's own model: the
    seed, the input's width and names, the two classes and balanced weights, ``predict`` and the
    tags. Each class keeps its parameters, its fit and its saved format."""

    def _seed(self) -> int:
        """The seed of the held-out split and of the library (0 when ``random_state`` is None)."""
        return 0 if self.random_state is None else int(self.random_state)

    def _set_features(self, X: Any) -> None:
        self.n_features_in_ = int(X.shape[1])
        if isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns):
            self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _set_classes(self, y: Any) -> np.ndarray:
        """``classes_`` and ``scale_pos_weight_`` (negatives per positive with balanced weights, else
        1) from ``y``; returns its 0/1 codes."""
        classes, codes = np.unique(np.asarray(y), return_inverse=True)
        if len(classes) != 2:
            raise ValueError(f"{type(self).__name__} needs two classes in y, not {len(classes)}")
        self.classes_ = classes
        positives = int(codes.sum())
        self.scale_pos_weight_ = (len(codes) - positives) / positives if self.class_weight == "balanced" else 1.0
        return codes

    def _check_width(self, X: Any) -> None:
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_}")

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_.take(np.argmax(self.predict_proba(X), axis=1), axis=0)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class XGBoostClassifier(BoosterMixin, ClassifierMixin, BaseEstimator):
    """Binary gradient-boosted trees from XGBoost (``tree_method="hist"``, native categories).

    * ``n_estimators`` is the most boosting rounds; with ``early_stopping_rounds`` and
      ``validation_fraction`` set, a seeded stratified ``validation_fraction`` of the training rows
      is held out and boosting stops once its log loss has not improved for that many rounds
      (``None`` for either: all ``n_estimators`` rounds on every row). The booster keeps the trees
      up to the best round.
    * ``class_weight="balanced"`` sets XGBoost's ``scale_pos_weight`` to negatives / positives of
      the training rows (and weights the held-out rows the same, so early stopping watches the
      loss being minimised).
    * ``max_cat_to_onehot``: a category column with fewer levels is split one level against the
      rest; others by XGBoost's partition split.
    * ``n_jobs`` is XGBoost's ``nthread`` for fitting and predicting (1: the search runs one fit per
      worker thread).

    Fitted: ``booster_`` (the trees up to the best round), ``best_iteration_`` (0-based, as XGBoost
    counts: ``best_iteration_ + 1`` trees), ``classes_``, ``n_features_in_``, ``feature_names_in_``
    (for a frame), ``scale_pos_weight_``.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "max_depth": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "min_child_weight": [Interval(Real, 0, None, closed="left")],
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

    def __init__(self, max_depth: int = 4, learning_rate: float = 0.1, min_child_weight: float = 1.0,
                 reg_lambda: float = 1.0, n_estimators: int = 500, early_stopping_rounds: int | None = 20,
                 validation_fraction: float | None = 0.1, class_weight: str | None = None,
                 max_cat_to_onehot: int = 4, max_bin: int = 256, random_state: int | None = None, n_jobs: int = 1):
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.min_child_weight = min_child_weight
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
        """The XGBoost training parameters these settings stand for (also what a full-data fit uses)."""
        return {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist",
                "max_depth": self.max_depth, "eta": self.learning_rate, "min_child_weight": self.min_child_weight,
                "lambda": self.reg_lambda, "max_cat_to_onehot": self.max_cat_to_onehot, "max_bin": self.max_bin,
                "scale_pos_weight": scale_pos_weight, "nthread": self.n_jobs, "seed": self._seed()}

    def fit(self, X: Any, y: Any) -> XGBoostClassifier:
        self._validate_params()  # scikit-learn's check of _parameter_constraints
        xgb = _xgboost()
        X = X if isinstance(X, pd.DataFrame) else np.asarray(X)
        self._set_features(X)
        codes = self._set_classes(y)
        params = self.booster_params(self.scale_pos_weight_)
        stop = self.early_stopping_rounds is not None and self.validation_fraction is not None
        common = {"enable_categorical": True, "max_bin": self.max_bin, "nthread": self.n_jobs}
        if stop:
            X_fit, X_val, y_fit, y_val = train_test_split(X, codes, test_size=self.validation_fraction,
                                                          stratify=codes, random_state=self._seed())
            train = xgb.QuantileDMatrix(X_fit, y_fit, **common)
            held_out = xgb.QuantileDMatrix(X_val, y_val, weight=np.where(y_val == 1, self.scale_pos_weight_, 1.0),
                                           ref=train, **common)
            booster = xgb.train(params, train, num_boost_round=self.n_estimators, evals=[(held_out, "validation")],
                                early_stopping_rounds=self.early_stopping_rounds, verbose_eval=False)
            best = int(booster.best_iteration)
        else:
            booster = xgb.train(params, xgb.QuantileDMatrix(X, codes, **common), num_boost_round=self.n_estimators)
            best = booster.num_boosted_rounds() - 1
        self._set_booster(booster, best)
        return self

    def _set_booster(self, booster: Any, best_iteration: int) -> None:
        """Keep the trees up to ``best_iteration`` (0-based), predicting with ``n_jobs`` threads."""
        self.best_iteration_ = int(best_iteration)
        self.booster_ = booster[: self.best_iteration_ + 1] if booster.num_boosted_rounds() > best_iteration + 1 \
            else booster
        self.booster_.set_param({"nthread": self.n_jobs})

    @classmethod
    def from_booster(cls, booster: Any, classes: Any = (0, 1), best_iteration: int | None = None,
                     **params: Any) -> XGBoostClassifier:
        """A fitted classifier around ``booster``, trained elsewhere with ``binary:logistic`` on the
        columns the pipeline's encoder gives (label 1 = ``classes[1]``). ``best_iteration`` (0-based)
        defaults to the booster's own (set by early stopping), else its last round; ``params`` are the
        constructor's, recorded as the model's settings (``get_params``)."""
        model = cls(**params)
        if best_iteration is None:
            attr = booster.attr("best_iteration")
            best_iteration = int(attr) if attr is not None else booster.num_boosted_rounds() - 1
        if not 0 <= best_iteration < booster.num_boosted_rounds():
            raise ValueError(f"best_iteration {best_iteration} is outside the booster's "
                             f"{booster.num_boosted_rounds()} rounds")
        model.classes_ = np.asarray(classes)
        if len(model.classes_) != 2:
            raise ValueError(f"XGBoostClassifier needs two classes, not {len(model.classes_)}")
        model.n_features_in_ = int(booster.num_features())
        if booster.feature_names is not None:
            model.feature_names_in_ = np.asarray(booster.feature_names, dtype=object)
        objective, model.scale_pos_weight_ = _objective(booster)
        if objective != "binary:logistic":
            raise ValueError(f"the booster was trained with objective {objective!r}; XGBoostClassifier needs "
                             "binary:logistic (its predictions are the probabilities)")
        model._set_booster(booster, best_iteration)
        return model

    # ------------------------------------------------------------------ predicting
    def predict_proba(self, X: Any) -> np.ndarray:
        """``[1 - p, p]`` per row, ``p`` the probability of ``classes_[1]``: XGBoost's in-place
        prediction on the frame as it comes (about ten times faster than building a DMatrix for a
        served request of one row)."""
        check_is_fitted(self, "booster_")
        if not isinstance(X, pd.DataFrame):
            X = np.asarray(X)
        self._check_width(X)
        p = np.asarray(self.booster_.inplace_predict(X, iteration_range=(0, self.best_iteration_ + 1)),
                       dtype=np.float64)
        return np.column_stack([1.0 - p, p])

    # ------------------------------------------------------------------ saving
    def __getstate__(self) -> dict[str, Any]:
        """Parameters and fitted attributes; the booster as XGBoost's own UBJSON bytes (no pickle)."""
        state = {k: v for k, v in self.__dict__.items() if k != "booster_"}
        if "booster_" in self.__dict__:
            state["booster_ubj_"] = bytes(self.booster_.save_raw(BOOSTER_FORMAT))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        raw = state.pop("booster_ubj_", None)
        self.__dict__.update(state)
        if raw is not None:
            booster = _xgboost().Booster()
            booster.load_model(bytearray(raw))
            booster.set_param({"nthread": self.n_jobs})
            self.booster_ = booster


def _objective(booster: Any) -> tuple[str, float]:
    """The booster's objective and its ``scale_pos_weight``, from its saved configuration."""
    objective = json.loads(booster.save_config())["learner"]["objective"]
    return str(objective["name"]), float(objective.get("reg_loss_param", {}).get("scale_pos_weight", 1.0))
