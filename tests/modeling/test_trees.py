"""The Laplace-corrected decision tree: scikit-learn's tree, smoothed leaf probabilities."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_classification
from sklearn.tree import DecisionTreeClassifier

from churn.modeling.trees import LaplaceDecisionTree


def test_same_tree_with_leaf_probabilities_k_plus_1_over_n_plus_2():
    """The tree, its leaves and its class predictions are scikit-learn's; each leaf's churn
    probability is (churners + 1) / (rows + 2), counted by hand from the training rows."""
    X, y = make_classification(600, n_features=6, random_state=0)
    ours = LaplaceDecisionTree(max_depth=6, min_samples_leaf=10, random_state=0).fit(X, y)
    ref = DecisionTreeClassifier(max_depth=6, min_samples_leaf=10, random_state=0).fit(X, y)
    np.testing.assert_array_equal(ours.apply(X), ref.apply(X))
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    leaves = ours.apply(X)
    expected = {leaf: (y[leaves == leaf].sum() + 1) / ((leaves == leaf).sum() + 2) for leaf in np.unique(leaves)}
    proba = ours.predict_proba(X)
    np.testing.assert_allclose(proba[:, 1], [expected[leaf] for leaf in leaves])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ref.predict_proba(X)[:, 1].min() == 0.0 and 0.0 < proba[:, 1].min() < proba[:, 1].max() < 1.0


def test_class_weights_count_as_weighted_rows():
    """With balanced class weights the counts are weighted counts, as the tree's own."""
    X, y = make_classification(400, weights=[0.85], random_state=1)
    tree = LaplaceDecisionTree(max_depth=3, class_weight="balanced", random_state=0).fit(X, y)
    w = np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))
    leaves = tree.apply(X)
    leaf = leaves[0]
    k, n = w[(leaves == leaf) & (y == 1)].sum(), w[leaves == leaf].sum()
    np.testing.assert_allclose(tree.predict_proba(X[:1])[0, 1], (k + 1) / (n + 2))
