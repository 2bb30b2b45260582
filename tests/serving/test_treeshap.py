"""Batched TreeSHAP (churn.serving.treeshap) against Shapley values by definition, tree by tree."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from churn.modeling.features import CategoryEncoder, TableCoercer
from churn.serving.reasons import explain
from churn.serving.treeshap import FULL_TABLE_NODES, Forest, hgb_forest, sklearn_forest, sklearn_input


def _goes_left(tree, node, x):
    """The tree's rule at ``node`` for one row, written out as its predictor reads it."""
    cell = x[tree.feature[node]]
    if int(node) in tree.categories:
        if math.isnan(cell) or cell < 0:
            return bool(tree.missing_left[node])
        return bool(tree.categories[int(node)][int(cell) & 255])
    if math.isnan(cell):
        return bool(tree.missing_left[node])
    return bool(cell <= tree.threshold[node])


def _expectation(tree, x, known, node=0):
    """Path-dependent expectation of the tree given the features in ``known``."""
    if tree.left[node] < 0:
        return float(tree.value[node])
    left, right = int(tree.left[node]), int(tree.right[node])
    if int(tree.feature[node]) in known:
        return _expectation(tree, x, known, left if _goes_left(tree, node, x) else right)
    share = tree.cover[left] / tree.cover[node]
    return share * _expectation(tree, x, known, left) + (1 - share) * _expectation(tree, x, known, right)


def _shapley(trees, x, n_features):
    """Shapley values of the trees' sum for one row, by enumerating every subset of features."""
    out = np.zeros(n_features)
    for tree in trees:
        used = sorted({int(f) for f in tree.feature[tree.left >= 0]})
        d = len(used)
        for i, f in enumerate(used):
            rest = used[:i] + used[i + 1 :]
            for size in range(d):
                weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
                for subset in itertools.combinations(rest, size):
                    out[f] += weight * (_expectation(tree, x, {*subset, f}) - _expectation(tree, x, set(subset)))
    return out


def _data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.integers(0, 5, n).astype(float),
                      "c": rng.choice(["x", "y", "z", "w"], n), "d": rng.normal(size=n)})
    X.loc[rng.random(n) < 0.1, "a"] = np.nan
    X.loc[rng.random(n) < 0.1, "c"] = None
    logit = 1.5 * np.nan_to_num(X.a) - 0.5 * X.b + X.c.map({"x": 1.0, "y": -1.0, "z": 0.5, "w": 0.0}).fillna(0)
    return X, (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)


def _check(forest: Forest, trees, Z: np.ndarray, rows: int = 25):
    phi = forest.shap(Z)
    for r in range(rows):
        np.testing.assert_allclose(phi[r], _shapley(trees, Z[r], forest.n_features), atol=1e-9, rtol=0)
    return phi


@pytest.mark.parametrize("leaves", [4, 24])  # every pattern tabulated, and only the batch's (> FULL_TABLE_NODES)
def test_hgb_contributions_are_shapley_values(leaves):
    """HistGradientBoosting with native categories and blanks: each row's contributions equal the
    Shapley values by definition, and base + contributions = its raw prediction."""
    X, y = _data()
    pipe = Pipeline([("coerce", TableCoercer(numeric=["a", "b", "d"], categorical=["c"])),
                     ("encode", CategoryEncoder(categorical=["c"], min_count=1)),
                     ("model", HistGradientBoostingClassifier(max_iter=6, max_leaf_nodes=leaves, min_samples_leaf=5,
                                                              random_state=0))]).fit(X, y)
    model = pipe[-1]
    forest = hgb_forest(model)
    assert (len(forest.large) > 0) == (leaves - 1 > FULL_TABLE_NODES)
    trees = forest.trees
    Zp = np.asarray(model._preprocess_X(pipe[:-1].transform(X), reset=False), dtype=np.float64)
    phi = _check(forest, trees, Zp)
    np.testing.assert_allclose(phi.sum(axis=1) + forest.expected, model._raw_predict(pipe[:-1].transform(X))[:, 0],
                               atol=1e-9, rtol=0)


@pytest.mark.parametrize("depth", [3, None])
def test_sklearn_tree_contributions_are_shapley_values(depth):
    """A decision tree (blanks by missing_go_to_left) and a small forest: Shapley values by
    definition, every row of a deep tree's batch included."""
    X, y = _data(seed=1)
    Z = X.assign(c=X.c.map({"x": 0.0, "y": 1.0, "z": 2.0, "w": 3.0})).to_numpy(np.float64)
    tree = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=20, random_state=0).fit(Z, y)
    values = [tree.tree_.value[:, 0, 1] / tree.tree_.value[:, 0, :].sum(axis=1)]
    forest = sklearn_forest([tree], values, Z.shape[1])
    _check(forest, forest.trees, sklearn_input(Z), rows=len(Z) if depth else 25)
    rf = RandomForestClassifier(n_estimators=3, max_depth=4, random_state=0).fit(np.nan_to_num(Z), y)
    forest = sklearn_forest(rf.estimators_, [e.tree_.value[:, 0, 1] for e in rf.estimators_], Z.shape[1])
    _check(forest, forest.trees, sklearn_input(np.nan_to_num(Z)))


def test_hgb_contributions_land_on_their_columns():
    """HistGradientBoosting's preprocessing puts its native categorical columns first: a column
    no tree can split on (constant) gets nothing, the contributions land on the columns tested."""
    X, y = _data(seed=2)
    X["flat"] = 0.0
    X = X[["a", "flat", "b", "d", "c"]]
    pipe = Pipeline([("coerce", TableCoercer(numeric=["a", "flat", "b", "d"], categorical=["c"])),
                     ("encode", CategoryEncoder(categorical=["c"], min_count=1)),
                     ("model", HistGradientBoostingClassifier(max_iter=10, max_leaf_nodes=6, random_state=0))]
                    ).fit(X, y)
    ex = explain(pipe, X)
    assert ex.columns == ["a", "flat", "b", "d", "c"]
    assert np.all(ex.values[:, 1] == 0.0)
    assert np.abs(ex.values[:, 4]).max() > 0.01 and np.abs(ex.values[:, 0]).max() > 0.01
