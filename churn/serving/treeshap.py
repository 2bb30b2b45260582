"""Exact path-dependent TreeSHAP of tree ensembles, batched over rows and trees.

A :class:`Forest` is a fitted ensemble's trees as arrays, built once per loaded model
(:func:`forest`, cached by the fitted model: :func:`hgb_forest` for HistGradientBoosting,
:func:`sklearn_forest` for scikit-learn trees), and :meth:`Forest.shap` splits the ensemble's raw
output (the sum of its trees' leaf values) for a batch of rows into one contribution per input
feature.

Method (per tree). For a leaf with value ``v`` whose path tests the features ``F`` (a feature
tested twice counts once, its cover shares multiplied), the expectation given the features ``S``
is ``v * prod_{f in S} o_f * prod_{f not in S} z_f`` (``o_f``: the row follows the path at every
test of ``f``; ``z_f``: the training share that does); :func:`leaf_shap` gives its Shapley values,
and a tree's are the sum over its leaves. They depend on the row only through ``o``, so a leaf
tabulates its ``2**d`` patterns once (:attr:`Leaf.table`) when a batch has more distinct ways
than that.

Speed. A row's contributions from one tree depend only on the way it goes at each of the tree's
internal nodes (its pattern: one bit per node). A tree of at most :data:`FULL_TABLE_NODES`
internal nodes has its contributions tabulated for every pattern once per model (within
:data:`FULL_TABLE_BYTES` for the model); the rows' patterns, one small integer per row and tree,
index those tables, and one sparse product (rows x table rows, one 1 per tree) @ (table rows x
features) sums the trees, a block of rows at a time. A larger tree tabulates the distinct
patterns a batch has (usually far fewer than its rows). Which way a row goes at a node is decided
for all nodes of all trees at once, as the model's own predictor decides (``<=`` the threshold,
blanks by ``missing_go_to_left``, HistGradientBoosting's native categories by their bitsets).

Runs where a model is served: numpy, pandas, scipy (scikit-learn's own dependency).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

MAX_TABLE_FEATURES = 10  # a leaf testing up to this many features gets its 2**d patterns tabulated once
FULL_TABLE_NODES = 10  # a tree with up to this many internal nodes gets every pattern tabulated once
FULL_TABLE_BYTES = 64 * 2**20  # at most this much of those tables per model
BLOCK_CELLS = 2**20  # rows per block of the tabulated trees: this many (row, tree) codes at a time


@dataclass
class Tree:
    """One tree as arrays over its nodes: children (-1 at leaves), split feature, cover, leaf value,
    and its split rule: go left when ``x <= threshold``, a blank goes left where ``missing_left``;
    a categorical node (HistGradientBoosting) goes by ``categories[node]`` instead: left or not for
    each code 0..255, and at index 256 for a negative code."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    cover: np.ndarray
    value: np.ndarray
    threshold: np.ndarray
    missing_left: np.ndarray
    categories: dict[int, np.ndarray] = field(default_factory=dict)

    def leaf_paths(self) -> list[tuple[int, list[tuple[int, bool]]]]:
        """Each leaf with its path: (internal node, went left) from the root down."""
        out, stack = [], [(0, [])]
        while stack:
            node, path = stack.pop()
            if self.left[node] < 0:
                out.append((node, path))
            else:
                stack.append((int(self.left[node]), [*path, (node, True)]))
                stack.append((int(self.right[node]), [*path, (node, False)]))
        return out


def _shapley_weights(d: int) -> np.ndarray:
    return np.array([math.factorial(s) * math.factorial(d - 1 - s) / math.factorial(d) for s in range(d)])


def leaf_shap(v: float, z: np.ndarray, o: np.ndarray) -> np.ndarray:
    """Shapley values (patterns x d) of one leaf with value ``v``, cover shares ``z`` (d) and the
    patterns' one-fractions ``o`` (patterns x d): ``v (o_f - z_f) sum_s w(s) e_s``, ``e_s`` the
    coefficients of ``prod_{j != f} (z_j + o_j t)``."""
    u, d = o.shape
    P = np.zeros((u, d + 1))  # prod_j (z_j + o_j t), coefficients of t^0..t^d
    P[:, 0] = 1.0
    for k in range(d):
        P[:, 1:] = P[:, 1:] * z[k] + P[:, :-1] * o[:, k : k + 1]
        P[:, 0] *= z[k]
    w = _shapley_weights(d)
    out = np.zeros((u, d))
    for k in range(d):
        # divide out (z_k + o_k t): o_k = 0 -> P / z_k; o_k = 1 -> synthetic division by (t + z_k)
        Q1 = np.zeros((u, d))
        Q1[:, d - 1] = P[:, d]
        for s in range(d - 1, 0, -1):
            Q1[:, s - 1] = P[:, s] - z[k] * Q1[:, s]
        Q0 = P[:, :d] / z[k] if z[k] > 0 else np.zeros((u, d))
        Q = np.where(o[:, k : k + 1] > 0, Q1, Q0)
        out[:, k] = v * (o[:, k] - z[k]) * (Q @ w)
    return out


def leaf_tables(v: np.ndarray, z: np.ndarray) -> np.ndarray:
    """:func:`leaf_shap` of every pattern (code ``sum_k o_k 2**k``) for several leaves at once:
    values ``v`` (leaves), cover shares ``z`` (leaves x d); (leaves x 2**d x d)."""
    n, d = z.shape
    o = ((np.arange(2**d)[:, None] >> np.arange(d)[None, :]) & 1).astype(np.float64)
    P = np.zeros((n, len(o), d + 1))
    P[:, :, 0] = 1.0
    for k in range(d):
        P[:, :, 1:] = P[:, :, 1:] * z[:, k, None, None] + P[:, :, :-1] * o[None, :, k : k + 1]
        P[:, :, 0] *= z[:, k, None]
    w = _shapley_weights(d)
    out = np.zeros((n, len(o), d))
    for k in range(d):
        zk = z[:, k, None]
        Q1 = np.zeros((n, len(o), d))
        Q1[:, :, d - 1] = P[:, :, d]
        for s in range(d - 1, 0, -1):
            Q1[:, :, s - 1] = P[:, :, s] - zk * Q1[:, :, s]
        Q0 = np.where((zk > 0)[:, :, None], P[:, :, :d] / np.where(zk > 0, zk, 1.0)[:, :, None], 0.0)
        Q = np.where(o[None, :, k : k + 1] > 0, Q1, Q0)
        out[:, :, k] = v[:, None] * (o[None, :, k] - zk) * (Q @ w)
    return out


@dataclass
class Leaf:
    value: float
    features: np.ndarray  # the features its path tests, each once
    z: np.ndarray  # training share that follows the path at the tests of each feature
    tests: list[list[tuple[int, bool]]]  # per feature: (internal node's position, went left)
    table: np.ndarray | None  # Shapley values of every pattern (2**d x d, code sum_k o_k 2**k), once needed


def leaves(tree: Tree) -> tuple[list[Leaf], np.ndarray, float]:
    """The tree's leaves with their paths, its internal nodes, and its expected value."""
    internal = np.flatnonzero(tree.left >= 0)
    col = {int(node): i for i, node in enumerate(internal)}
    out, expected = [], 0.0
    for leaf, path in tree.leaf_paths():
        v = float(tree.value[leaf])
        feats: dict[int, list[tuple[int, bool, float]]] = {}
        for node, went_left in path:
            child = tree.left[node] if went_left else tree.right[node]
            share = tree.cover[child] / tree.cover[node] if tree.cover[node] > 0 else 0.0
            feats.setdefault(int(tree.feature[node]), []).append((col[node], went_left, share))
        fs = list(feats)
        z = np.array([np.prod([s for _, _, s in feats[f]]) for f in fs])
        expected += v * float(np.prod(z))
        if not fs or v == 0.0:
            continue
        out.append(Leaf(v, np.array(fs), z, [[(c, g) for c, g, _ in feats[f]] for f in fs], None))
    return out, internal, expected


def pattern_shap(leaf_list: list[Leaf], patterns: np.ndarray, used: np.ndarray) -> np.ndarray:
    """A tree's Shapley values (patterns x ``used``) for rows that go left at its internal nodes as
    ``patterns`` (patterns x internal nodes, bool) says; ``used``: the features the tree tests."""
    where = {int(f): i for i, f in enumerate(used)}
    phi = np.zeros((len(patterns), len(used)))
    for leaf in leaf_list:
        o = np.ones((len(patterns), len(leaf.features)), bool)
        for k, tests in enumerate(leaf.tests):
            for c, went_left in tests:
                o[:, k] &= patterns[:, c] == went_left
        cols = [where[int(f)] for f in leaf.features]
        d = len(cols)
        if leaf.table is None and d <= MAX_TABLE_FEATURES and 2**d <= len(patterns):  # tabulate once, when it pays
            every = ((np.arange(2**d)[:, None] >> np.arange(d)[None, :]) & 1).astype(np.float64)
            leaf.table = leaf_shap(leaf.value, leaf.z, every)
        if leaf.table is not None:
            phi[:, cols] += leaf.table[o.astype(np.int64) @ (1 << np.arange(d))]
        else:
            phi[:, cols] += leaf_shap(leaf.value, leaf.z, o.astype(np.float64))
    return phi


def _distinct(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``bits`` (rows x nodes, bool) reduced to their distinct patterns: (code per row,
    patterns)."""
    n, width = bits.shape
    packed = np.packbits(bits, axis=1, bitorder="little")
    if packed.shape[1] <= 8:
        key = np.zeros((n, 8), np.uint8)
        key[:, : packed.shape[1]] = packed
        codes, uniques = pd.factorize(key.view(np.uint64).ravel())
        patterns = np.unpackbits(uniques.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")[:, :width]
        return codes, patterns.astype(bool)
    _, first, codes = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    return codes.ravel(), bits[first]


class Forest:
    """Trees that add up (their leaf values' sum is the model's raw output), ready for
    :meth:`shap`; ``columns[i]``: the position in the model's input of the trees' feature ``i``."""

    def __init__(self, trees: list[Tree], n_features: int, base: float = 0.0,
                 columns: np.ndarray | None = None) -> None:
        self.trees = trees
        self.n_features = n_features
        self.columns = np.arange(n_features) if columns is None else np.asarray(columns)
        self.tree_leaves = [leaves(t) for t in trees]
        self.expected = base + sum(e for _, _, e in self.tree_leaves)
        self.used = [np.unique(t.feature[internal]) for t, (_, internal, _) in zip(trees, self.tree_leaves,
                                                                                     strict=True)]
        # every internal node of every tree, then one that never goes left (padding)
        feat, thr, mgl, cat, tables, self.nodes = [], [], [], [], [], []
        start = 0
        for t, (_, internal, _) in zip(trees, self.tree_leaves, strict=True):
            self.nodes.append(start + np.arange(len(internal)))
            start += len(internal)
            feat.append(t.feature[internal])
            thr.append(np.where([int(i) in t.categories for i in internal], np.nan, t.threshold[internal]))
            mgl.append(t.missing_left[internal])
            for i in internal:
                cat.append(len(tables) if int(i) in t.categories else -1)
                if int(i) in t.categories:
                    tables.append(t.categories[int(i)])
        self.feat = np.concatenate([*feat, [0]]).astype(np.intp)
        self.thr = np.concatenate([*thr, [np.nan]]).astype(np.float64)
        self.mgl = np.concatenate([*mgl, [False]]).astype(bool)
        self.cat = np.array([*cat, -1], np.intp)
        self.cat_tables = np.array(tables, bool).reshape(len(tables), 257)
        self._tabulate()

    def _tabulate(self) -> None:
        """Every pattern's contributions of the small trees as one table (per feature, over the
        table's rows), and per feature the lookups that turn a row's value into its patterns' codes."""
        kinds: dict[int, set[bool]] = {}
        for f, c in zip(self.feat[:-1], self.cat[:-1], strict=True):
            kinds.setdefault(int(f), set()).add(bool(c >= 0))
        mixed = {f for f, k in kinds.items() if len(k) > 1}  # numeric and categorical tests of one feature
        budget, small = FULL_TABLE_BYTES, []
        for t, nodes in enumerate(self.nodes):
            size = 2 ** len(nodes) * self.n_features * 8
            if 0 < len(nodes) <= FULL_TABLE_NODES and size <= budget and not mixed & set(self.feat[nodes].tolist()):
                small.append(t)
                budget -= size
        chosen = set(small)
        self.small = small
        self.large = [t for t, nodes in enumerate(self.nodes) if len(nodes) and t not in chosen]
        by_size: dict[int, list[Leaf]] = {}
        for t in small:  # their leaves' tables, all leaves testing d features at once
            for leaf in self.tree_leaves[t][0]:
                if leaf.table is None and len(leaf.features) <= MAX_TABLE_FEATURES:
                    by_size.setdefault(len(leaf.features), []).append(leaf)
        for group in by_size.values():
            tables = leaf_tables(np.array([leaf.value for leaf in group]), np.array([leaf.z for leaf in group]))
            for leaf, table in zip(group, tables, strict=True):
                leaf.table = table
        blocks, offsets, start = [], [], 0
        for t in small:
            every = ((np.arange(2 ** len(self.nodes[t]))[:, None] >> np.arange(len(self.nodes[t]))[None, :]) & 1
                     ).astype(bool)
            block = np.zeros((len(every), self.n_features))
            block[:, self.used[t]] = pattern_shap(self.tree_leaves[t][0], every, self.used[t])
            blocks.append(block)
            offsets.append(start)
            start += len(every)
        self.offsets = np.array(offsets, np.int64)
        self.table = (np.vstack(blocks) if blocks else np.zeros((0, self.n_features))).T.copy()  # features x rows
        # per feature: its thresholds (numeric) or None (categorical), the small trees that test it,
        # and code[value's bin, tree] = sum of 2**j over the tree's nodes j on it that the bin goes left at
        self.lookups: list[tuple[int, np.ndarray | None, np.ndarray, np.ndarray]] = []
        for f in sorted({int(f) for t in small for f in self.feat[self.nodes[t]]}):
            trees = [i for i, t in enumerate(small) if (self.feat[self.nodes[t]] == f).any()]
            categorical = True in kinds[f]
            ids = np.concatenate([self.nodes[small[i]] for i in trees])
            ids = ids[self.feat[ids] == f]
            cuts = None if categorical else np.unique(self.thr[ids])
            bins = 257 if categorical else len(cuts) + 2  # numeric: rank 0..len(cuts), then a blank
            code = np.zeros((bins, len(trees)), np.int64)
            for i, t in enumerate(trees):
                for j, node in enumerate(self.nodes[small[t]]):
                    if self.feat[node] != f:
                        continue
                    if categorical:
                        left = self.cat_tables[self.cat[node]]
                    else:  # x <= cuts[r] exactly when rank(x) = #cuts below x is <= r
                        left = np.append(np.searchsorted(cuts, self.thr[node]) >= np.arange(bins - 1), self.mgl[node])
                    code[:, i] += left.astype(np.int64) << j
            self.lookups.append((f, cuts, np.array(trees, np.intp), code))
        # all of them as one matrix: a row's one-hot bins (one per feature) @ it = its codes (exact in float32)
        self.bin_offsets = np.cumsum([0, *(len(code) for _, _, _, code in self.lookups)])
        self.code_matrix = np.zeros((self.bin_offsets[-1], len(small)), np.float32)
        for i, (_, _, trees, code) in enumerate(self.lookups):
            self.code_matrix[self.bin_offsets[i] : self.bin_offsets[i + 1], trees] = code

    def go_left(self, Z: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Whether each row of ``Z`` goes left at each of the nodes ``ids`` (rows x nodes)."""
        cells = Z[:, self.feat[ids]]
        go = cells <= self.thr[ids]  # False for a blank, and at a categorical node (its threshold is NaN)
        go |= np.isnan(cells) & self.mgl[ids]
        cat = self.cat[ids]
        where = np.flatnonzero(cat >= 0)
        if len(where):
            x = cells[:, where]
            valid = x >= 0  # a blank or a negative code: index 256
            code = np.where(valid, np.where(valid, x, 0).astype(np.int64) & 255, 256)
            go[:, where] = self.cat_tables[cat[where][None, :], code]
        return go

    def shap(self, Z: np.ndarray) -> np.ndarray:
        """Contributions (rows x the trees' features) of the rows of ``Z`` (the trees' input, float64);
        each row's sum + :attr:`expected` is its raw output."""
        n = len(Z)
        phi = np.zeros((n, self.n_features))
        if self.small:
            k = len(self.lookups)
            step = max(1, BLOCK_CELLS // len(self.small))
            for s in range(0, n, step):
                block = Z[s : s + step]
                m = len(block)
                bins = np.empty((m, k), np.int64)
                for i, (f, cuts, _, _) in enumerate(self.lookups):
                    x = block[:, f]
                    if cuts is None:  # a category code 0..255; a blank or a negative code: 256
                        valid = x >= 0
                        bins[:, i] = np.where(valid, np.where(valid, x, 0).astype(np.int64) & 255, 256)
                    else:
                        bins[:, i] = np.searchsorted(cuts, x)
                        bins[np.isnan(x), i] = len(cuts) + 1
                bins += self.bin_offsets[:-1]
                onehot = sparse.csr_matrix((np.ones(m * k, np.float32), bins.ravel(), np.arange(0, m * k + 1, k)),
                                           shape=(m, len(self.code_matrix)))
                codes = (onehot @ self.code_matrix).T.astype(np.intp, order="C")  # trees x rows
                codes += self.offsets[:, None]
                for f, _, trees, _ in self.lookups:
                    phi[s : s + m, f] += self.table[f][codes[trees]].sum(axis=0)
        for t in self.large:
            codes, patterns = _distinct(self.go_left(Z, self.nodes[t]))
            values = pattern_shap(self.tree_leaves[t][0], patterns, self.used[t])
            phi[:, self.used[t]] += values[codes]
        return phi


# ---------------------------------------------------------------- fitted models as forests
def _sklearn_tree(est: Any, values: np.ndarray) -> Tree:
    t = est.tree_
    mgl = np.asarray(getattr(t, "missing_go_to_left", np.zeros(t.node_count)), bool)
    return Tree(t.children_left, t.children_right, t.feature, t.weighted_n_node_samples.astype(np.float64),
                values, t.threshold.astype(np.float64), mgl)


def sklearn_forest(estimators: list[Any], values: list[np.ndarray], n_features: int) -> Forest:
    """scikit-learn decision trees (their inputs as float32, as they read them, see
    :func:`sklearn_input`) with the given leaf values per node."""
    return Forest([_sklearn_tree(e, v) for e, v in zip(estimators, values, strict=True)], n_features)


def sklearn_input(Z: np.ndarray) -> np.ndarray:
    """The float64 input of a scikit-learn tree forest: its float32 view, as its trees compare."""
    return np.asarray(Z, dtype=np.float32).astype(np.float64)


def _bit(bitsets: np.ndarray, row: int) -> np.ndarray:
    codes = np.arange(256)
    return ((bitsets[row, codes // 32] >> (codes % 32)) & 1).astype(bool)


def hgb_forest(model: Any) -> Forest:
    """A HistGradientBoosting classifier's trees as its predictor reads them
    (sklearn.ensemble._hist_gradient_boosting._predictor), on its preprocessed input
    (``model._preprocess_X``: native categorical columns first, as codes); the base is its
    baseline prediction, and ``columns`` maps the preprocessed columns back to the model's input."""
    known, f_idx_map = model._bin_mapper.make_known_categories_bitsets()
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        feat = nodes["feature_idx"].astype(np.int64)
        mgl = nodes["missing_go_to_left"].astype(bool)
        categories = {}
        for j in np.flatnonzero(nodes["is_categorical"].astype(bool) & ~leaf):
            in_left = _bit(predictor.raw_left_cat_bitsets, int(nodes["bitset_idx"][j]))
            is_known = _bit(known, int(f_idx_map[feat[j]]))
            categories[int(j)] = np.append(in_left | (~is_known & mgl[j]), mgl[j])
        trees.append(Tree(np.where(leaf, -1, nodes["left"].astype(np.int64)),
                          np.where(leaf, -1, nodes["right"].astype(np.int64)), feat,
                          nodes["count"].astype(np.float64), nodes["value"].astype(np.float64),
                          nodes["num_threshold"].astype(np.float64), mgl, categories))
    is_cat = getattr(model, "is_categorical_", None)
    if getattr(model, "_preprocessor", None) is not None and is_cat is not None:
        columns = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~np.asarray(is_cat, bool))])
    else:
        columns = None
    n_features = model.n_features_in_
    return Forest(trees, n_features, float(np.ravel(model._baseline_prediction)[0]), columns)


_FORESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # fitted model -> its Forest


def forest(owner: Any, build: Callable[[], Forest]) -> Forest:
    """``build()`` for the fitted model ``owner``, once per loaded model."""
    if owner not in _FORESTS:
        _FORESTS[owner] = build()
    return _FORESTS[owner]
