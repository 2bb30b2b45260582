"""Reason codes: why a customer scores what it scores, on the log-odds scale, per raw input column.

:func:`explain` splits each row's log-odds into a base value plus one signed contribution per raw
input column (``Contract``, ``tenure``: not one-hot, spline or code columns); :func:`top_reasons`
keeps the largest ``k`` by size as ``reason_<i>_column``, ``reason_<i>_value`` and
``reason_<i>_contribution``.

Per family, in the model's own input space (the columns the pipeline's last step sees):

* logistic regression: exact, ``coef * (z - background)``; the background is the training mean
  of every scaled number (0 after ``StandardScaler``) and ``1/k`` for each of a categorical
  column's ``k`` one-hot columns (all levels alike: the encoder keeps no level counts);
* XGBoost: exact TreeSHAP, XGBoost's own (``Booster.predict(..., pred_contribs=True)``);
* decision tree and HistGradientBoosting: exact path-dependent TreeSHAP (:mod:`churn.serving.treeshap`,
  batched over rows and trees, built once per loaded model; HistGradientBoosting's contributions
  are mapped back from its preprocessing's column order, native categorical columns first; the
  ``shap`` package's TreeExplainer reads native-categorical HistGradientBoosting splits as numeric
  thresholds and gives wrong sums, and it pulls numba in); the tree explains its leaves' log-odds
  (the Laplace-corrected leaf probability as a logit);
* random forest: exact TreeSHAP of the averaged probability, rescaled to the log-odds of that
  probability (``(logit(p) - logit(p0)) / (p - p0)``, one factor per row): the sum is exact, the
  split between columns is approximate (the logit of an average is not additive over trees);
* SVM, neural network: approximate. Each raw column's features are set to the background above,
  one column at a time; a column's contribution is the change in the score, and what the
  one-at-a-time changes leave unexplained is shared evenly, so the sum is exact.

Contributions in the model's input space go back to raw columns through the fitted steps
(:func:`feature_sources`): each one-hot, spline, scaled or code column to the column it was made
from; a sum column (:class:`~churn.modeling.features.GroupSums`) evenly to its parts.

The registered :class:`~churn.serving.calibration.ChurnClassifier` combines its members through
its calibrator: with ``sigmoid`` (Platt scaling, or a stack's weights over several members) the
log-odds are ``sum_j a_j * member_j + b``, linear in the members' log-odds (or SVM score), so the
contributions combine exactly through the weights. ``isotonic`` and ``none`` maps are not
linear: the contributions then explain the member's log-odds before calibration
(:attr:`Explanation.calibrated` is False). A member that averages fold models' log-odds
(bagging) gets the average of its fold models' contributions (:func:`fold_models`).

Runs where a model is served: numpy, pandas, scipy and scikit-learn; xgboost only for an XGBoost
member; no dask, no pydantic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from churn.serving.treeshap import forest, hgb_forest, sklearn_forest, sklearn_input

_EPS = 1e-6  # as the calibrator clips probabilities before their logit
FOLD_ATTRIBUTES = ("fold_pipelines_", "pipelines_", "estimators_", "fold_models_")  # a bagged member's fits


@dataclass
class Explanation:
    """Rows' log-odds split into ``base`` (per row) + ``values`` (rows x ``columns``).

    ``exact``: the split is the method's exact one for every member; ``calibrated``: the log-odds
    explained are the calibrated model's (else the member's before an isotonic or identity map).
    """

    values: np.ndarray
    base: np.ndarray
    columns: list[str]
    exact: bool
    calibrated: bool = True

    @property
    def log_odds(self) -> np.ndarray:
        return self.base + self.values.sum(axis=1)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


# ---------------------------------------------------------------- feature map (model input -> raw columns)
def _step_list(pipeline: Any) -> list[tuple[str, Any]]:
    return [(n, s) for n, s in pipeline.steps if s != "passthrough" and s is not None]


def _per_column_outputs(transformer: Any, n_in: int) -> list[int]:
    """How many output columns each of the ``n_in`` input columns of a column-wise transformer
    gives, in order (one-hot: its levels kept; splines: its basis functions; else one)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    if isinstance(transformer, Pipeline):
        counts = [1] * n_in
        for _, step in _step_list(transformer):
            inner = _per_column_outputs(step, n_in)
            counts = [c * i for c, i in zip(counts, inner, strict=True)]  # each stage works column by column
        return counts
    if isinstance(transformer, OneHotEncoder):
        return list(transformer._n_features_outs)  # sklearn's own count per column (levels, infrequent, drop)
    spline = getattr(transformer, "spline_", None)  # churn's NumericBasis
    if spline is not None:
        return [len(spline.get_feature_names_out()) // max(n_in, 1)] * n_in
    return [1] * n_in


def _background_kind(transformer: Any) -> str:
    """What a column-wise transformer's outputs average to on the training rows: ``zero``
    (scaled), ``onehot`` (1/k each) or ``unknown``."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    last = transformer.steps[-1][1] if isinstance(transformer, Pipeline) else transformer
    if isinstance(last, StandardScaler):
        return "zero"
    if isinstance(last, OneHotEncoder):
        return "onehot"
    return "unknown"


def feature_sources(pipeline: Any) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(``M``, raw columns, background) for a fitted pipeline without its last step.

    ``M[j, c]`` is the share of model input column ``j`` that goes to raw column ``c`` (each row
    sums to 1); background is each model input column's reference value for the linear and
    one-at-a-time methods (NaN where no step gives one). Derived from the fitted steps: their
    column lists, ``get_feature_names_out`` and their per-column output counts.
    """
    from sklearn.compose import ColumnTransformer

    steps = _step_list(pipeline)[:-1]
    raw = [str(c) for c in steps[0][1].feature_names_in_]
    index = {c: i for i, c in enumerate(raw)}
    names = list(raw)
    M = np.eye(len(raw))
    bg = np.full(len(raw), np.nan)
    for _, step in steps:
        if isinstance(step, ColumnTransformer):
            rows, new_names, new_bg = [], [], []
            pos = {c: i for i, c in enumerate(names)}
            for _, trans, cols in step.transformers_:
                if trans == "drop" or len(cols) == 0:
                    continue
                cols = [names[c] if isinstance(c, (int, np.integer)) else str(c) for c in cols]
                counts = [1] * len(cols) if trans == "passthrough" else _per_column_outputs(trans, len(cols))
                kind = "unknown" if trans == "passthrough" else _background_kind(trans)
                out = list(trans.get_feature_names_out(cols)) if trans != "passthrough" else cols
                if sum(counts) != len(out):
                    raise ValueError(f"cannot map the outputs of {type(trans).__name__} to its columns")
                for c, k in zip(cols, counts, strict=True):
                    rows.extend([M[pos[c]]] * k)
                    new_bg.extend([0.0 if kind == "zero" else 1.0 / k if kind == "onehot" else np.nan] * k)
                new_names.extend(str(n) for n in out)
            M, names, bg = np.array(rows).reshape(len(rows), len(raw)), new_names, np.array(new_bg)
        elif hasattr(step, "get_support"):
            keep = np.asarray(step.get_support(), bool)
            M, bg, names = M[keep], bg[keep], [n for n, k in zip(names, keep, strict=True) if k]
        elif hasattr(step, "groups"):  # GroupSums: a sum column splits evenly over its parts
            pos = {c: i for i, c in enumerate(names)}
            extra = []
            for name, parts in (step.groups or {}).items():
                extra.append(np.mean([M[pos[p]] for p in parts], axis=0))
                names.append(str(name))
            if extra:
                M = np.vstack([M, *extra])
                bg = np.append(bg, np.full(len(extra), np.nan))
        else:  # coerce, CategoryEncoder: the same columns by name
            out = [str(n) for n in step.get_feature_names_out()]
            pos = {c: i for i, c in enumerate(names)}
            if any(n not in pos for n in out):
                raise ValueError(f"cannot map the outputs of {type(step).__name__} to its columns")
            M, bg, names = M[[pos[n] for n in out]], bg[[pos[n] for n in out]], out
    del index
    return M, raw, bg


# ---------------------------------------------------------------- tree leaf values
def _tree_leaf_proba(est: Any) -> np.ndarray:
    share = est.tree_.value[:, 0, :]
    return share[:, 1] / share.sum(axis=1)


def _laplace_proba(est: Any) -> np.ndarray:
    share = _tree_leaf_proba(est)
    n = est.tree_.weighted_n_node_samples
    return (share * n + 1.0) / (n + est.n_classes_)


# ---------------------------------------------------------------- one fitted model on its own inputs
def _model_input(pipeline: Any, X: pd.DataFrame) -> Any:
    front = _step_list(pipeline)[:-1]
    Z = X
    for _, step in front:
        Z = step.transform(Z)
    return Z


def _numeric(Z: Any) -> np.ndarray:
    return np.asarray(Z.to_numpy(np.float64) if isinstance(Z, pd.DataFrame) else Z, dtype=np.float64)


def _one_at_a_time(score: Any, Z: np.ndarray, groups: list[np.ndarray], bg: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Approximate: each group's columns set to the background in turn; the change in the score is
    the group's contribution, the unexplained rest shared evenly. Returns (rows x groups, base)."""
    full = score(Z)
    ref = np.where(np.isnan(bg), np.nanmean(Z, axis=0) if len(Z) else 0.0, bg)  # unknown: the batch mean
    base = np.full(len(Z), float(score(ref[None, :])[0]))
    out = np.zeros((len(Z), len(groups)))
    for g, cols in enumerate(groups):
        Zg = Z.copy()
        Zg[:, cols] = ref[cols]
        out[:, g] = full - score(Zg)
    out += ((full - base) - out.sum(axis=1))[:, None] / max(len(groups), 1)
    return out, base


def explain_pipeline(pipeline: Any, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
    """A fitted pipeline's score split per raw column: (rows x raw columns, base per row, raw
    columns, exact). The score is its log-odds, or the decision function for a model without
    probabilities (SVC), the scale the calibrator reads."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    M, raw, bg = feature_sources(pipeline)
    model = _step_list(pipeline)[-1][1]
    Z = _model_input(pipeline, X)
    n = len(X)
    exact = True
    if isinstance(model, LogisticRegression):
        Zn = _numeric(Z)
        w = model.coef_[0]
        ref = np.nan_to_num(bg, nan=0.0)
        phi = (Zn - ref[None, :]) * w[None, :]
        base = np.full(n, float(model.intercept_[0] + w @ ref))
    elif type(model).__name__ == "XGBoostClassifier":
        import xgboost

        dm = xgboost.DMatrix(Z, enable_categorical=True, nthread=model.n_jobs)
        contribs = model.booster_.predict(dm, pred_contribs=True, iteration_range=(0, model.best_iteration_ + 1))
        phi, base = contribs[:, :-1].astype(np.float64), contribs[:, -1].astype(np.float64)
    elif isinstance(model, HistGradientBoostingClassifier):
        trees = forest(model, lambda: hgb_forest(model))
        Zp = model._preprocess_X(Z, reset=False)  # the codes its predictors read (sklearn's own preprocessing)
        phi = trees.shap(np.asarray(Zp, dtype=np.float64))
        M = M[trees.columns]  # its preprocessing puts native categorical columns first
        base = np.full(n, trees.expected)
    elif isinstance(model, DecisionTreeClassifier):
        laplace = hasattr(model, "predict_proba") and type(model).__name__ == "LaplaceDecisionTree"
        trees = forest(model, lambda: sklearn_forest(
            [model], [_logit(_laplace_proba(model) if laplace else _tree_leaf_proba(model))], model.n_features_in_))
        phi = trees.shap(sklearn_input(_numeric(Z)))
        base = np.full(n, trees.expected)
    elif isinstance(model, RandomForestClassifier):
        k = len(model.estimators_)
        trees = forest(model, lambda: sklearn_forest(
            model.estimators_, [_tree_leaf_proba(e) / k for e in model.estimators_], model.n_features_in_))
        phi = trees.shap(sklearn_input(_numeric(Z)))
        p0 = trees.expected
        p = p0 + phi.sum(axis=1)
        gap = p - p0
        slope = 1.0 / (np.clip(p0, _EPS, 1 - _EPS) * (1 - np.clip(p0, _EPS, 1 - _EPS)))
        ratio = np.where(np.abs(gap) > 1e-9, (_logit(p) - _logit(np.full(n, p0))) / np.where(gap == 0, 1, gap), slope)
        phi = phi * ratio[:, None]
        base = _logit(np.full(n, p0))
        exact = False
    else:  # SVM, neural network and anything else: one raw column at a time (approximate)
        Zn = _numeric(Z)
        if hasattr(model, "predict_proba") and not hasattr(model, "decision_function"):
            def score(A: np.ndarray) -> np.ndarray:
                return _logit(model.predict_proba(A)[:, 1])
        elif hasattr(model, "decision_function"):
            def score(A: np.ndarray) -> np.ndarray:
                return np.asarray(model.decision_function(A), dtype=np.float64)
        else:
            def score(A: np.ndarray) -> np.ndarray:
                return _logit(model.predict_proba(A)[:, 1])
        groups = [np.flatnonzero(M[:, c] > 0) for c in range(len(raw))]
        used = [g for g in range(len(raw)) if len(groups[g])]
        values, base = _one_at_a_time(score, Zn, [groups[g] for g in used], bg)
        out = np.zeros((n, len(raw)))
        out[:, used] = values
        return out, base, raw, False
    return phi @ M, base, raw, exact


# ---------------------------------------------------------------- members and the registered model
def fold_models(member: Any) -> list[Any] | None:
    """The fold pipelines of a member that averages their log-odds (bagging), or None for a
    plain pipeline."""
    if hasattr(member, "steps"):
        return None
    for attr in FOLD_ATTRIBUTES:
        models = getattr(member, attr, None)
        if isinstance(models, (list, tuple)) and models and all(hasattr(m, "steps") for m in models):
            return list(models)
    return None


def explain_member(member: Any, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[str], bool]:
    """:func:`explain_pipeline` of a member; for a bagged member, the average over its fold models."""
    folds = fold_models(member)
    if folds is None:
        return explain_pipeline(member, X)
    parts = [explain_pipeline(m, X) for m in folds]
    cols = parts[0][2]
    if any(p[2] != cols for p in parts):
        raise ValueError("the fold models of a member read different columns")
    return (np.mean([p[0] for p in parts], axis=0), np.mean([p[1] for p in parts], axis=0), cols,
            all(p[3] for p in parts))


def explain(model: Any, X: pd.DataFrame) -> Explanation:
    """``model``'s log-odds for ``X`` split per raw column: the registered ``ChurnClassifier`` (its
    members through the calibrator's weights) or a single fitted pipeline (its own log-odds)."""
    members = getattr(model, "members", None)
    calibrator = getattr(model, "calibrator", None)
    if members is None:
        values, base, cols, exact = explain_member(model, X)
        return Explanation(values, base, cols, exact)
    parts = [explain_member(m, X) for m in members]
    cols = parts[0][2]
    if any(p[2] != cols for p in parts):
        raise ValueError("the members of the model read different columns")
    exact = all(p[3] for p in parts)
    if calibrator.method == "sigmoid":
        a = np.asarray(calibrator.coef_, dtype=np.float64)
        values = sum(a[j] * parts[j][0] for j in range(len(parts)))
        base = sum(a[j] * parts[j][1] for j in range(len(parts))) + float(calibrator.intercept_)
        return Explanation(np.asarray(values), np.asarray(base, dtype=np.float64), cols, exact)
    values, base, _, _ = parts[0]  # isotonic / none: one member, its log-odds before the map
    return Explanation(values, base, cols, exact, calibrated=False)


def reason_columns(k: int) -> list[str]:
    """The output columns of :func:`top_reasons`, in order."""
    return [f"reason_{i}_{part}" for i in range(1, k + 1) for part in ("column", "value", "contribution")]


def _as_text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def _texts(series: pd.Series) -> np.ndarray:
    """:func:`_as_text` of every cell of ``series`` (object array; None for a blank), each distinct
    value formatted once."""
    values = series.to_numpy()
    if values.dtype == np.float64:  # distinct by bit pattern, so -0.0 stays "-0"
        blank = np.isnan(values)
        codes, uniques = pd.factorize(np.where(blank, 0.0, values).view(np.int64))
        texts = np.array([_as_text(v) for v in uniques.view(np.float64).tolist()], dtype=object)
        out = texts[codes]
        out[blank] = None
        return out
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts = np.array([*(_as_text(v) for v in np.asarray(uniques, dtype=object).tolist()), None], dtype=object)
    return texts[codes]  # code -1 (a blank): the None at the end


def top_reasons(explanation: Explanation, X: pd.DataFrame, k: int = 3) -> pd.DataFrame:
    """The ``k`` contributions largest in size per row: ``reason_<i>_column`` (the raw column),
    ``reason_<i>_value`` (its value in the row, as text; blank for a missing cell) and
    ``reason_<i>_contribution`` (signed, log-odds), largest first (equal sizes: the earlier column
    first)."""
    values = explanation.values
    n, m = values.shape
    k = min(k, m)
    size = np.abs(values)
    size[np.isnan(size)] = -1.0  # a NaN after every number
    rows = np.arange(n)
    order = np.empty((n, k), np.intp)
    for i in range(k):  # argmax takes the first of equal sizes, as a stable sort would
        order[:, i] = np.argmax(size, axis=1)
        size[rows, order[:, i]] = -np.inf
    cols = np.asarray(explanation.columns, dtype=object)
    cells = np.empty((n, k), dtype=object)
    for c in np.unique(order):
        at = order == c
        picked = np.flatnonzero(at.any(axis=1))
        text = _texts(X[cols[c]].iloc[picked])
        hit_rows, hit_pos = np.nonzero(at[picked])
        cells[picked[hit_rows], hit_pos] = text[hit_rows]
    out: dict[str, Any] = {}
    for i in range(k):
        out[f"reason_{i + 1}_column"] = cols[order[:, i]]
        out[f"reason_{i + 1}_value"] = cells[:, i]
        out[f"reason_{i + 1}_contribution"] = values[rows, order[:, i]]
    return pd.DataFrame(out, index=X.index)
