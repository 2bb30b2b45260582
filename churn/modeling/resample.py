"""The training-time row step of every pipeline: a row cap, then the imbalance treatment.

It acts only while fitting (imbalanced-learn calls ``fit_resample`` on the training part of each
CV fold, never on the rows being scored), and the registered model leaves it out, so serving
never imports imbalanced-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from churn.modeling.compat import safe_indexing


def stratified_cap(y: np.ndarray, max_rows: int, seed: int | None) -> np.ndarray:
    """Sorted positions of a seeded sample of at most ``max_rows`` rows keeping each class's share."""
    y = np.asarray(y)
    if len(y) <= max_rows:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picked = []
    for cls in np.unique(y):
        rows = np.flatnonzero(y == cls)
        take = max(1, int(round(len(rows) * max_rows / len(y))))
        picked.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(picked))


class Resampler(BaseEstimator):
    """Cap the training rows at ``max_rows`` (None: all), then apply ``method``: ``"none"`` or
    ``"smote"`` (imbalanced-learn's SMOTE, seeded). A sampler step for ``imblearn.pipeline.Pipeline``;
    both parameters can be searched."""

    def __init__(self, method: str = "none", max_rows: int | None = None, random_state: int | None = None):
        self.method = method
        self.max_rows = max_rows
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> Resampler:
        """Nothing to learn (pipelines call ``fit_resample``); only the parameters are checked."""
        self._check_method()
        return self

    def _check_method(self) -> None:
        if self.method not in ("none", "smote"):
            raise ValueError(f"Resampler.method must be 'none' or 'smote', not {self.method!r}")

    def fit_resample(self, X: Any, y: Any) -> tuple[Any, Any]:
        self._check_method()
        if self.max_rows is not None and len(y) > self.max_rows:
            keep = stratified_cap(np.asarray(y), self.max_rows, self.random_state)
            X, y = safe_indexing(X, keep), safe_indexing(y, keep)
        if self.method == "smote":
            from imblearn.over_sampling import SMOTE

            X, y = SMOTE(random_state=self.random_state).fit_resample(X, y)
        return X, y
