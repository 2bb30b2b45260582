"""A decision tree whose leaf probabilities are Laplace-corrected (imported where models are served)."""

from __future__ import annotations

import numpy as np
from sklearn.tree import DecisionTreeClassifier


class LaplaceDecisionTree(DecisionTreeClassifier):
    """``DecisionTreeClassifier`` with Laplace-corrected leaf probabilities: a leaf holding ``n``
    training rows, ``k`` of them churners, scores ``(k + 1) / (n + 2)`` instead of ``k / n``.

    A plain tree gives every pure leaf a probability of exactly 0 or 1, whatever its size: ranks
    tie across pure leaves, and a stack or calibration map that reads the score as a logit sees
    ±infinity. The correction (Provost and Domingos, "Tree induction for probability-based
    ranking", 2003) ranks a pure leaf of 200 rows above one of 20 and keeps every score inside
    (0, 1). scikit-learn's tree has no such option, hence this subclass; the tree it grows is the
    same (``fit`` is untouched), only ``predict_proba`` differs. Counts are weighted counts, so
    class weights carry through.
    """

    def predict_proba(self, X, check_input: bool = True) -> np.ndarray:  # noqa: ANN001 (sklearn's signature)
        leaves = self.apply(X, check_input=check_input)
        share = self.tree_.value[leaves, 0, :]  # class shares of the leaf (scikit-learn >= 1.4)
        share = share / share.sum(axis=1, keepdims=True)
        n = self.tree_.weighted_n_node_samples[leaves][:, None]
        return (share * n + 1.0) / (n + self.n_classes_)
