"""Drift and performance from two profiles: the reference (training) and a new batch.

* per feature: the population stability index (PSI) over the reference bins (numeric deciles
  and blanks; categorical levels, blanks and levels the reference never saw), plus SciPy's
  two-sample Kolmogorov-Smirnov test on the bottom-k samples (numeric) or chi-square test of
  homogeneity of the reference's and the batch's level counts (categorical);
* prediction drift: PSI and KS of the model's scores;
* with labels in the batch: ROC AUC, PR AUC, Brier score and calibration, beside the
  reference's figures (out-of-fold predictions of the training rows).

A feature is flagged when its PSI reaches ``psi`` (0.2 by default: "significant shift" in the
usual reading; PSI does not grow with the batch size, unlike a test's p-value). Rows the
table's rules quarantine (an unseen level, an out-of-range number) never reach a profile: their
counts per reason and column are compared with ``quarantined`` (a share of the rows read). A
batch with fewer clean rows than the ``churn.monitor.min-rows`` setting gets a note ("no rows to
compare", "N rows: too few to compare, need M") instead of a drift verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from churn.monitoring.profile import Profile

_EPS = 1e-4  # floor on bin shares in the PSI (an empty bin would make it infinite)


@dataclass
class Thresholds:
    """What counts as drift (each None switches its check off)."""

    psi: float | None = 0.2
    prediction_psi: float | None = 0.2
    roc_auc_drop: float | None = 0.05
    brier_rise: float | None = 0.03
    quarantined: float | None = 0.01  # rows quarantined for one reason in one column, share of rows read
    calibration_gap: float | None = 0.05  # a score decile's realised - expected churn rate (labelled rows)


@dataclass
class FeatureDrift:
    feature: str
    kind: str  # numeric | categorical
    psi: float
    test: str  # ks | chi2
    statistic: float
    p_value: float
    reference: list[float]  # shares per bin/level (for the plots)
    batch: list[float]
    labels: list[str]
    flagged: bool = False


@dataclass
class DriftResult:
    rows_reference: int
    rows_batch: int
    features: list[FeatureDrift]
    prediction: FeatureDrift | None
    performance: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> {reference, batch}
    calibration: dict[str, list[float]] = field(default_factory=dict)  # batch: mean score, churn rate per bin
    alerts: list[str] = field(default_factory=list)
    rows_read: int = 0  # batch rows read, profiled or quarantined
    quarantined: dict[str, int] = field(default_factory=dict)  # batch rows per "reason:column"
    note: str | None = None  # why the batch was not compared with the reference (too few rows)

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.flagged]


def psi(reference: np.ndarray, batch: np.ndarray) -> float:
    """Population stability index of two count vectors over the same bins."""
    r = np.maximum(np.asarray(reference, np.float64) / max(np.sum(reference), 1), _EPS)
    b = np.maximum(np.asarray(batch, np.float64) / max(np.sum(batch), 1), _EPS)
    return float(np.sum((b - r) * np.log(b / r)))


def _shares(counts: np.ndarray) -> list[float]:
    return (counts / max(counts.sum(), 1)).tolist()


def _numeric(name: str, ref: dict[str, Any], new: dict[str, Any]) -> FeatureDrift:
    r = np.append(np.asarray(ref["counts"], np.float64), ref["missing"])
    b = np.append(np.asarray(new["counts"], np.float64), new["missing"])
    rs, bs = np.asarray(ref["sample"]["values"]), np.asarray(new["sample"]["values"])
    ks = stats.ks_2samp(rs, bs, method="asymp") if len(rs) and len(bs) else None
    edges = ref["edges"]
    labels = ([f"≤ {edges[0]:.4g}"] + [f"{a:.4g} – {b:.4g}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
              + [f"> {edges[-1]:.4g}"] if edges else ["all"]) + ["blank"]
    return FeatureDrift(name, "numeric", psi(r, b), "ks", float(ks.statistic) if ks else float("nan"),
                        float(ks.pvalue) if ks else float("nan"), _shares(r), _shares(b), labels)


def _categorical(name: str, ref: dict[str, Any], new: dict[str, Any]) -> FeatureDrift:
    levels = sorted(ref["counts"])
    unseen = sum(c for k, c in new["counts"].items() if k not in ref["counts"])
    r = np.array([ref["counts"][k] for k in levels] + [ref["missing"], 0], np.float64)
    b = np.array([new["counts"].get(k, 0) for k in levels] + [new["missing"], unseen], np.float64)
    # a test of homogeneity of the two count vectors (the reference is a sample too: testing the
    # batch against the reference shares as if they were exact flags millions of rows for noise)
    used = (r + b) > 0
    chi = stats.chi2_contingency(np.vstack([r[used], b[used]])) if b.sum() and used.sum() > 1 else None
    return FeatureDrift(name, "categorical", psi(r, b), "chi2", float(chi.statistic) if chi else float("nan"),
                        float(chi.pvalue) if chi else float("nan"), _shares(r), _shares(b),
                        [*levels, "blank", "unseen level"])


def _auc_from_histograms(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """ROC AUC (ties within a bin count half) and average precision from per-class histograms."""
    pos, neg = pos[::-1], neg[::-1]  # highest scores first
    tp, fp = np.cumsum(pos), np.cumsum(neg)
    P, N = tp[-1], fp[-1]
    if not P or not N:
        return float("nan"), float("nan")
    auc = float(np.sum(pos * (fp - neg + neg / 2)) / (P * N))
    auc = 1.0 - auc  # the sum counted negatives ranked above each positive
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    ap = float(np.sum(precision * pos) / P)
    return auc, ap


def performance(labelled: dict[str, Any]) -> dict[str, float]:
    """ROC AUC, PR AUC, Brier score and churn rate of a profile's labelled rows."""
    auc, ap = _auc_from_histograms(np.asarray(labelled["pos"], np.float64), np.asarray(labelled["neg"], np.float64))
    n = max(labelled["rows"], 1)
    return {"roc_auc": auc, "pr_auc": ap, "brier": labelled["brier_sum"] / n, "churn_rate": labelled["positives"] / n,
            "rows": float(labelled["rows"])}


def too_few(rows: int, min_rows: int) -> str | None:
    """Why a batch of ``rows`` clean rows is not compared with the reference, or None."""
    if rows == 0:
        return "no rows to compare"
    return f"{rows} rows: too few to compare, need {min_rows}" if rows < min_rows else None


def quarantine_alerts(result: DriftResult, limits: Thresholds) -> None:
    """Alerts for each reason and column whose quarantined rows reach ``limits.quarantined`` of the
    rows read: rows the rules refuse (an unseen level, an out-of-range number) never reach the
    profile, so this is the drift signal for them."""
    if limits.quarantined is None or not result.rows_read:
        return
    for key, n in sorted(result.quarantined.items(), key=lambda kv: -kv[1]):
        if n / result.rows_read >= limits.quarantined:
            result.alerts.append(f"quarantine: {key} in {n:,} of {result.rows_read:,} rows read "
                                 f"({n / result.rows_read:.1%}) >= {limits.quarantined:.1%}")


def compare(reference: Profile, batch: Profile, limits: Thresholds, *, rows_read: int | None = None,
            quarantined: dict[str, int] | None = None, min_rows: int = 1) -> DriftResult:
    """Every feature's drift, the prediction drift and (with labels) the performance change; with
    the batch's quarantine counts, their alerts. A batch of fewer than ``min_rows`` clean rows is
    not compared: the result carries a note instead of a drift verdict."""
    note = too_few(batch["rows"], min_rows)
    if note is not None:
        result = DriftResult(reference["rows"], batch["rows"], [], None, note=note)
    else:
        result = _compare(reference, batch, limits)
    result.rows_read = batch["rows"] if rows_read is None else rows_read
    result.quarantined = dict(quarantined or {})
    quarantine_alerts(result, limits)
    return result


def _compare(reference: Profile, batch: Profile, limits: Thresholds) -> DriftResult:
    features = [_numeric(c, reference["numeric"][c], batch["numeric"][c]) for c in reference["numeric"]]
    features += [_categorical(c, reference["categorical"][c], batch["categorical"][c])
                 for c in reference["categorical"]]
    result = DriftResult(reference["rows"], batch["rows"], features, None)
    for f in features:
        f.flagged = limits.psi is not None and f.psi >= limits.psi
        if f.flagged:
            result.alerts.append(f"feature drift: {f.feature} PSI {f.psi:.3f} >= {limits.psi}")
    if "scores" in reference and "scores" in batch:
        r, b = np.asarray(reference["scores"]["counts"]), np.asarray(batch["scores"]["counts"])
        rs, bs = reference["scores"]["sample"]["values"], batch["scores"]["sample"]["values"]
        ks = stats.ks_2samp(rs, bs, method="asymp") if rs and bs else None
        n = len(r)
        pred = FeatureDrift("score", "numeric", psi(r, b), "ks", float(ks.statistic) if ks else float("nan"),
                            float(ks.pvalue) if ks else float("nan"), _shares(r), _shares(b),
                            [f"{i / n:.2f}–{(i + 1) / n:.2f}" for i in range(n)])
        pred.flagged = limits.prediction_psi is not None and pred.psi >= limits.prediction_psi
        if pred.flagged:
            result.alerts.append(f"prediction drift: score PSI {pred.psi:.3f} >= {limits.prediction_psi}")
        result.prediction = pred
    if batch.get("labelled") and batch["labelled"]["rows"] and reference.get("labelled"):
        ref_m, new_m = performance(reference["labelled"]), performance(batch["labelled"])
        result.performance = {k: {"reference": ref_m[k], "batch": new_m[k]} for k in ref_m}
        lab = batch["labelled"]
        cal_n = np.asarray(lab["cal_n"], np.float64)
        result.calibration = {"mean_score": (np.asarray(lab["cal_p"]) / np.maximum(cal_n, 1)).tolist(),
                              "churn_rate": (np.asarray(lab["cal_y"]) / np.maximum(cal_n, 1)).tolist(),
                              "rows": cal_n.tolist()}
        drop = ref_m["roc_auc"] - new_m["roc_auc"]
        if limits.roc_auc_drop is not None and drop >= limits.roc_auc_drop:
            result.alerts.append(f"performance: ROC AUC {new_m['roc_auc']:.4f}, {drop:.4f} below the reference")
        rise = new_m["brier"] - ref_m["brier"]
        if limits.brier_rise is not None and rise >= limits.brier_rise:
            result.alerts.append(f"performance: Brier {new_m['brier']:.4f}, {rise:.4f} above the reference")
    return result
