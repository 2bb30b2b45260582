"""Mergeable profiles of a table and its scores, computed partition by partition.

A profile holds, per numeric feature, counts over fixed bins (deciles of the reference rows)
and blanks; per categorical feature, counts per level and blanks; for the model's scores a
histogram over [0, 1]; for labelled rows, score histograms per class and calibration sums; and
for KS tests a bottom-k sample (the k rows with the smallest row keys, which two partitions'
samples merge into exactly). Profiles of partitions add up to the profile of their union.

Why by hand: whylogs' mergeable profiles are the closest fit, but whylogs 1.6.4 fails on
NumPy 2 (``np.unicode_``); Evidently and NannyML compute drift from whole in-memory frames.
The statistics themselves come from SciPy (:mod:`churn.monitoring.drift`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

SAMPLE = 5_000  # values kept per numeric feature and for the scores (bottom-k by row key)
SCORE_BINS = 20  # score histogram over [0, 1]
ROC_BINS = 1_000  # per-class score histograms: ROC and PR AUC to within about 0.001
CAL_BINS = 10  # calibration: mean score and churn rate per score decile of [0, 1]

Profile = dict[str, Any]


def numeric_edges(values: pd.Series) -> list[float]:
    """Interior bin edges: the distinct deciles of the reference values."""
    v = pd.to_numeric(values, errors="coerce").dropna().to_numpy(np.float64)
    if not len(v):
        return []
    return sorted({float(q) for q in np.quantile(v, np.linspace(0.1, 0.9, 9))})


def _bottom_k(keys: np.ndarray, values: np.ndarray, k: int = SAMPLE) -> dict[str, list]:
    keep = np.argsort(keys, kind="stable")[:k]
    return {"keys": keys[keep].tolist(), "values": values[keep].tolist()}


def profile_features(frame: pd.DataFrame, keys: np.ndarray, edges: dict[str, list[float]],
                     categorical: list[str]) -> Profile:
    """Feature part of a profile for one partition (numeric columns: those with ``edges``)."""
    keys = np.asarray(keys, dtype=np.uint64)
    out: Profile = {"rows": len(frame), "numeric": {}, "categorical": {}}
    for col, cuts in edges.items():
        v = pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64)
        ok = ~np.isnan(v)
        counts = np.bincount(np.searchsorted(np.asarray(cuts), v[ok], side="right"), minlength=len(cuts) + 1)
        out["numeric"][col] = {"edges": list(cuts), "counts": counts.tolist(), "missing": int((~ok).sum()),
                               "sample": _bottom_k(keys[ok], v[ok])}
    for col in categorical:
        text = frame[col].astype("string")
        counts = text.value_counts(dropna=True)
        out["categorical"][col] = {"counts": {str(k): int(c) for k, c in counts.items()},
                                   "missing": int(text.isna().sum())}
    return out


def profile_scores(p: np.ndarray, keys: np.ndarray, y: np.ndarray | None = None) -> Profile:
    """Score part of a profile: histogram, sample and, for rows with a label (y 0/1, others NaN
    or negative), the sums that give ROC AUC, PR AUC, Brier and calibration."""
    p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
    keys = np.asarray(keys, dtype=np.uint64)
    bins = np.minimum((p * SCORE_BINS).astype(int), SCORE_BINS - 1)
    out: Profile = {"scores": {"counts": np.bincount(bins, minlength=SCORE_BINS).tolist(),
                               "sample": _bottom_k(keys, p)}, "labelled": None}
    if y is not None:
        y = np.asarray(y, np.float64)
        has = (y == 0) | (y == 1)
        pl, yl = p[has], y[has].astype(int)
        roc = np.minimum((pl * ROC_BINS).astype(int), ROC_BINS - 1)
        cal = np.minimum((pl * CAL_BINS).astype(int), CAL_BINS - 1)
        out["labelled"] = {
            "rows": int(has.sum()), "positives": int(yl.sum()), "brier_sum": float(((pl - yl) ** 2).sum()),
            "pos": np.bincount(roc[yl == 1], minlength=ROC_BINS).tolist(),
            "neg": np.bincount(roc[yl == 0], minlength=ROC_BINS).tolist(),
            "cal_n": np.bincount(cal, minlength=CAL_BINS).tolist(),
            "cal_p": np.bincount(cal, weights=pl, minlength=CAL_BINS).tolist(),
            "cal_y": np.bincount(cal, weights=yl, minlength=CAL_BINS).tolist(),
        }
    return out


def _add(a: list, b: list) -> list:
    return (np.asarray(a, np.float64) + np.asarray(b, np.float64)).tolist()


def _merge_sample(a: dict[str, list], b: dict[str, list]) -> dict[str, list]:
    return _bottom_k(np.asarray(a["keys"] + b["keys"], np.uint64), np.asarray(a["values"] + b["values"]))


def merge(a: Profile, b: Profile) -> Profile:
    """The profile of the union of two partitions' rows."""
    out: Profile = {"rows": a.get("rows", 0) + b.get("rows", 0), "numeric": {}, "categorical": {}}
    for col, na in a.get("numeric", {}).items():
        nb = b["numeric"][col]
        out["numeric"][col] = {"edges": na["edges"], "counts": _add(na["counts"], nb["counts"]),
                               "missing": na["missing"] + nb["missing"],
                               "sample": _merge_sample(na["sample"], nb["sample"])}
    for col, ca in a.get("categorical", {}).items():
        counts = dict(ca["counts"])
        for level, c in b["categorical"][col]["counts"].items():
            counts[level] = counts.get(level, 0) + c
        out["categorical"][col] = {"counts": counts, "missing": ca["missing"] + b["categorical"][col]["missing"]}
    if "scores" in a:
        out["scores"] = {"counts": _add(a["scores"]["counts"], b["scores"]["counts"]),
                         "sample": _merge_sample(a["scores"]["sample"], b["scores"]["sample"])}
        la, lb = a.get("labelled"), b.get("labelled")
        if la and lb:
            out["labelled"] = {k: (la[k] + lb[k] if isinstance(la[k], (int, float)) else _add(la[k], lb[k]))
                               for k in la}
        else:
            out["labelled"] = la or lb
    return out


def merge_all(profiles: list[Profile]) -> Profile:
    """Fold a list of partition profiles into one."""
    out = profiles[0]
    for p in profiles[1:]:
        out = merge(out, p)
    return out
