"""The registered model's last step: member scores → calibrated churn probability.

:class:`ChurnClassifier` holds one fitted pipeline (or several, stacked) and a
:class:`ScoreCalibrator` fitted on their *out-of-fold* scores during training, so serving and
batch scoring return calibrated probabilities. A member may be a :class:`FoldAverage`: the k
models of one CV repeat's folds, averaged (``model.bagging``). scikit-learn's ``CalibratedClassifierCV`` fits
its map on predictions of models it fits itself (or on in-sample predictions of a frozen one);
here the map must come from the cross-validation predictions the search already made, which no
scikit-learn class accepts. Prediction is plain NumPy: no dask, no pydantic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.metaestimators import available_if

_EPS = 1e-6
METHODS = ("none", "sigmoid", "isotonic")


def member_scores(pipeline: Any, X: Any) -> np.ndarray:
    """A fitted pipeline's churn score: the positive-class probability, or the decision function
    for models without probabilities (SVC)."""
    if hasattr(pipeline, "predict_proba"):
        return np.asarray(pipeline.predict_proba(X))[:, 1]
    return np.asarray(pipeline.decision_function(X), dtype=np.float64)


def log_odds(p: np.ndarray) -> np.ndarray:
    """log(p / (1 - p)), ``p`` clipped to [1e-6, 1 - 1e-6] first."""
    p = np.clip(p, _EPS, 1 - _EPS)  # as ScoreCalibrator reads a probability
    return np.log(p / (1 - p))


def _has_proba(fold_average: FoldAverage) -> bool:
    return all(hasattr(m, "predict_proba") for m in fold_average.members)


def _has_decision(fold_average: FoldAverage) -> bool:
    return not _has_proba(fold_average)


class FoldAverage(ClassifierMixin, BaseEstimator):
    """A bagged member: the fitted pipelines of one CV repeat's k folds, served as one model.

    Its score is the mean of the fold models' **log-odds** (their probabilities clipped to
    [1e-6, 1 - 1e-6], as :class:`ScoreCalibrator` reads them), turned back into a probability;
    for models without probabilities (SVC) the mean of their decision values. Why log-odds and
    not probabilities: the calibration map and the stack are logistic regressions on the
    members' log-odds, so the served score is on the scale they were fitted on; gradient
    boosting and logistic regression score in log-odds natively, so the mean of k such models
    is one model of the same additive form (the mean of per-feature contributions is the
    model's per-feature contribution, which reason codes need). scikit-learn's
    ``VotingClassifier`` averages probabilities only, needs decision-function-free members and
    is made by ``fit``; these members are fitted already. Built from fitted parts, so ``fit``
    is an error.
    """

    def __init__(self, members: list[Any] | None = None):
        self.members = members

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def fit(self, X: Any, y: Any) -> FoldAverage:
        raise TypeError("FoldAverage is assembled from fitted fold models; fit those instead")

    def mean_log_odds(self, X: Any) -> np.ndarray:
        """The fold models' mean log-odds (decision values for models without probabilities)."""
        if _has_proba(self):
            return np.mean([log_odds(np.asarray(m.predict_proba(X))[:, 1]) for m in self.members], axis=0)
        return np.mean([np.asarray(m.decision_function(X), dtype=np.float64) for m in self.members], axis=0)

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.mean_log_odds(X)))
        return np.column_stack([1.0 - p, p])

    @available_if(_has_decision)
    def decision_function(self, X: Any) -> np.ndarray:
        return self.mean_log_odds(X)

    def predict(self, X: Any) -> np.ndarray:
        return (self.mean_log_odds(X) >= 0).astype(int)


class ScoreCalibrator(BaseEstimator):
    """Map k score columns to a probability.

    * ``sigmoid``: logistic regression on the scores (probabilities enter as their logit) —
      Platt scaling for one column, a stacked ensemble's weights for several;
    * ``isotonic``: a monotone step map (one column);
    * ``none``: the single column as it is (it must already be a probability).

    ``is_proba`` says, per column, whether the scores are probabilities.
    """

    def __init__(self, method: str = "sigmoid", is_proba: tuple[bool, ...] = (True,), C: float = 1e4):
        self.method = method
        self.is_proba = is_proba
        self.C = C

    def _features(self, S: np.ndarray) -> np.ndarray:
        S = np.asarray(S, dtype=np.float64).reshape(len(S), -1).copy()
        for j, proba in enumerate(self.is_proba):
            if proba:
                p = np.clip(S[:, j], _EPS, 1 - _EPS)
                S[:, j] = np.log(p / (1 - p))
        return S

    def fit(self, S: np.ndarray, y: np.ndarray) -> ScoreCalibrator:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, not {self.method!r}")
        S = np.asarray(S, dtype=np.float64).reshape(len(S), -1)
        y = np.asarray(y).astype(int)
        if S.shape[1] != len(self.is_proba):
            raise ValueError(f"{S.shape[1]} score columns but is_proba has {len(self.is_proba)}")
        if self.method != "sigmoid" and S.shape[1] != 1:
            raise ValueError(f"{self.method} calibration takes one score column, not {S.shape[1]}")
        if self.method == "none" and not self.is_proba[0]:
            raise ValueError("scores that are not probabilities need a calibration map")
        self.coef_, self.intercept_ = np.zeros(S.shape[1]), 0.0
        self.x_, self.y_ = np.zeros(0), np.zeros(0)
        if self.method == "sigmoid":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=self.C, max_iter=1000).fit(self._features(S), y)
            self.coef_, self.intercept_ = lr.coef_[0].astype(np.float64), float(lr.intercept_[0])
        elif self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(S[:, 0], y)
            self.x_, self.y_ = iso.X_thresholds_.astype(np.float64), iso.y_thresholds_.astype(np.float64)
        self.n_features_in_ = S.shape[1]
        return self

    def predict(self, S: np.ndarray) -> np.ndarray:
        """Calibrated probability per row."""
        S = np.asarray(S, dtype=np.float64).reshape(len(S), -1)
        if self.method == "sigmoid":
            z = self._features(S) @ self.coef_ + self.intercept_
            return 1.0 / (1.0 + np.exp(-z))
        if self.method == "isotonic":
            return np.interp(S[:, 0], self.x_, self.y_)
        return np.clip(S[:, 0], 0.0, 1.0)


class ChurnClassifier(ClassifierMixin, BaseEstimator):
    """Fitted member pipelines and the calibrator over their scores: the registered model.

    Built from already-fitted parts (see :func:`churn.modeling.calibrate`); ``fit`` is not how
    it is made, so calling it is an error.
    """

    def __init__(self, members: list[Any] | None = None, calibrator: ScoreCalibrator | None = None,
                 names: list[str] | None = None):
        self.members = members
        self.calibrator = calibrator
        self.names = names

    @property
    def classes_(self) -> np.ndarray:
        return np.array([0, 1])

    def fit(self, X: Any, y: Any) -> ChurnClassifier:
        raise TypeError("ChurnClassifier is assembled from fitted members; fit the member pipelines instead")

    def scores(self, X: Any) -> np.ndarray:
        """One column per member: its raw score."""
        return np.column_stack([member_scores(m, X) for m in self.members])

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.calibrator.predict(self.scores(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] >= 0.5).astype(int)
