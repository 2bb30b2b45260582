"""The private scikit-learn functions churn relies on, in one place.

Each exists because the public API has no equivalent; ``tests/modeling/test_compat.py``
fails loudly when a scikit-learn upgrade moves or changes one of them.

* ``safe_indexing`` — row selection that works on DataFrames, Series and arrays alike
  (what ``cross_validate`` uses to cut folds), so a fold is cut exactly as GridSearchCV cuts it.
* ``forest_checked_X`` — a forest's own input check before predicting with its trees one by
  one (the prefix forests of the work-sharing search must see what ``predict_proba`` sees).
* ``validate_params`` — an estimator's own parameter-constraint check, without fitting.
* ``scorer_response_method`` — which prediction method a named scorer calls (the preflight
  refuses a probability-only scoring for a family that has only a decision function).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.ensemble import RandomForestClassifier
from sklearn.utils import _safe_indexing


def safe_indexing(X: Any, indices: np.ndarray) -> Any:
    """Rows ``indices`` of ``X`` (DataFrame, Series or array), as scikit-learn's CV cuts them."""
    return _safe_indexing(X, indices)


def forest_checked_X(forest: RandomForestClassifier, X: Any) -> np.ndarray:
    """``X`` as the forest's ``predict_proba`` checks and converts it before calling its trees."""
    return forest._validate_X_predict(X)


def validate_params(estimator: BaseEstimator) -> None:
    """Raise scikit-learn's ``InvalidParameterError`` when a parameter breaks its constraints."""
    estimator._validate_params()


def scorer_response_method(scoring: str) -> str | tuple[str, ...]:
    """The method (or methods, in order of preference) the scorer named ``scoring`` calls."""
    from sklearn.metrics import get_scorer

    return get_scorer(scoring)._response_method
