"""Performance before the labels: confidence-based performance estimation (CBPE), block by block.

A calibrated churn probability ``p`` is the chance that the customer churns. So, with no label,
each row counts as ``p`` of a churner and ``1 - p`` of a stayer, and the figures a retention
team asks for have an expected value (NannyML's CBPE does the same from whole in-memory frames):

* churners among those contacted (``p >= threshold``): ``E[TP] = Σ p`` over the contacted rows;
* precision at the threshold: ``E[TP] / contacted`` (the contacted count is known);
* recall at the threshold: ``E[TP] / (E[TP] + E[FN])``, ``E[FN] = Σ p`` over the others;
* ROC AUC: the expected share of (churner, stayer) pairs in the right order,
  ``Σ_{i≠j} p_i (1 - p_j) [s_i > s_j] / Σ_{i≠j} p_i (1 - p_j)`` (pairs in one score bin count 1/2,
  as ties do): from a histogram of the scores weighted by ``p`` and by ``1 - p``, less the
  pairs of a row with itself (``Σ p (1 - p)``: a row cannot be both).

Each CSV block gives an :class:`EstimateSummary` on its worker: per cell (fine score bin x side
of the threshold) the rows, ``Σp`` and ``Σp(1 - p)``, once for every row and once for the rows
that carry a label (with their churners: the realised figures come from the same cells). Summaries
add up to the summary of the union; their size does not depend on the rows.

**Interval.** Given the scores, if the probabilities are calibrated on this batch, the realised
churners in any set of rows are a sum of independent Bernoulli(p) draws (Poisson-binomial). The
interval is the 2.5-97.5 % range of the realised figure over ``DRAWS`` simulated label sets, one
Binomial(rows, mean p) per cell (a binomial per fine bin in place of the exact Poisson-binomial:
its variance is larger by ``Σ (p - mean p)²`` over the bin, negligible at these bin widths). It
answers "where should the realised figure land once the labels come", which is what the estimate
is compared against; it does not include the error of the calibration map itself. A bootstrap
over partitions was not used: a batch often has a handful of blocks of unequal size, and
resampling rows re-draws the scores too (the figure of the population, not of this batch).

**When it cannot be trusted.** The estimate assumes P(churn | score) is what the calibration map
says: it survives a covariate shift (P(y | x) kept), not a concept shift. On any labelled rows
:func:`check_calibration` compares realised and expected churners per score decile; a decile off
by ``gap`` or more and beyond sampling noise (|z| >= 3.29, two-sided 0.001) marks the estimate as
not to be trusted for the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

BINS = 2048  # fine score bins, equal width in logit over [-SPAN, SPAN], plus one below and one above
SPAN = 8.0  # logit 8: p from 0.00034 to 0.99966; a bin is 0.0078 wide in logit (0.002 in p at 0.5)
DRAWS = 1000  # simulated label sets for the intervals
LEVEL = 0.95
SEED = 0  # the simulation's seed: same batch, same interval
Z_DRIFT = 3.29  # |z| of a decile's churners beyond which it is not sampling noise (two-sided 0.001)
GROUPS = 10  # score deciles of the labelled rows for the calibration check
METRICS = ("roc_auc", "precision", "recall", "churners_contacted")


@lru_cache(maxsize=4)
def _edges(bins: int = BINS, span: float = SPAN) -> np.ndarray:
    edges = 1.0 / (1.0 + np.exp(-np.linspace(-span, span, bins + 1)))
    edges.flags.writeable = False
    return edges


def bin_of(p: np.ndarray) -> np.ndarray:
    """Each probability's bin (0: below the first edge, ``BINS + 1``: at or above the last)."""
    return np.searchsorted(_edges(), p, side="right")


@dataclass
class Cells:
    """Per cell ``(side, bin)`` (side 1: contacted, ``p >= threshold``): rows, Σp, Σp(1 - p) and
    churners (0 for rows without a label)."""

    n: np.ndarray
    sum_p: np.ndarray
    sum_pq: np.ndarray
    pos: np.ndarray

    @classmethod
    def empty(cls) -> Cells:
        return cls(*(np.zeros((2, BINS + 2)) for _ in range(4)))

    @classmethod
    def of(cls, p: np.ndarray, threshold: float, y: np.ndarray | None = None) -> Cells:
        side = (p >= threshold).astype(np.int64)
        idx = side * (BINS + 2) + bin_of(p)
        k = 2 * (BINS + 2)

        def count(w: np.ndarray | None) -> np.ndarray:
            return np.bincount(idx, weights=w, minlength=k).astype(np.float64).reshape(2, BINS + 2)

        return cls(count(None), count(p), count(p * (1 - p)), count(y) if y is not None else np.zeros((2, BINS + 2)))

    def __add__(self, other: Cells) -> Cells:
        return Cells(self.n + other.n, self.sum_p + other.sum_p, self.sum_pq + other.sum_pq, self.pos + other.pos)

    @property
    def rows(self) -> int:
        return int(round(self.n.sum()))


@dataclass
class EstimateSummary:
    """A block's (or a batch's) sums for CBPE; see the module docstring."""

    threshold: float
    every: Cells = field(default_factory=Cells.empty)  # every scored row
    labelled: Cells = field(default_factory=Cells.empty)  # the rows with a label, with their churners
    fingerprint: int = 0  # Σ (row key + 2**32 * round(p * 2**20)) mod 2**64: same rows, same scores

    @classmethod
    def of(cls, p: np.ndarray, keys: np.ndarray, threshold: float, y: np.ndarray | None = None) -> EstimateSummary:
        """The sums of probabilities ``p`` (with row ``keys``); ``y``: labels 0/1, NaN where none."""
        p = np.clip(np.asarray(p, np.float64), 0.0, 1.0)
        out = cls(float(threshold), Cells.of(p, threshold))
        if y is not None:
            y = np.asarray(y, np.float64)
            has = (y == 0) | (y == 1)
            if has.any():
                out.labelled = Cells.of(p[has], threshold, y[has])
        with np.errstate(over="ignore"):  # wrapping is the point: a sum mod 2**64
            mixed = np.asarray(keys, np.uint64) + (np.round(p * 2**20).astype(np.uint64) << np.uint64(32))
            out.fingerprint = int(np.sum(mixed, dtype=np.uint64))
        return out

    def merge(self, other: EstimateSummary) -> EstimateSummary:
        if self.threshold != other.threshold:
            raise ValueError(f"estimate summaries at thresholds {self.threshold} and {other.threshold} cannot merge")
        return EstimateSummary(self.threshold, self.every + other.every, self.labelled + other.labelled,
                               (self.fingerprint + other.fingerprint) % 2**64)


def merge_all(summaries: list[EstimateSummary]) -> EstimateSummary:
    out = summaries[0]
    for s in summaries[1:]:
        out = out.merge(s)
    return out


@dataclass
class Interval:
    value: float
    low: float
    high: float

    def holds(self, x: float) -> bool:
        return bool(self.low <= x <= self.high)


def _auc_of_bins(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """ROC AUC from per-bin churners and stayers, bins ascending in score along the last axis;
    pairs sharing a bin count 1/2. NaN without both classes."""
    below = np.cumsum(neg, axis=-1) - neg
    P, N = pos.sum(-1), neg.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(pos * (below + 0.5 * neg), axis=-1) / (P * N)


def _figures(tp: Any, fn: Any, contacted: float, auc: Any) -> dict[str, Any]:
    with np.errstate(invalid="ignore", divide="ignore"):
        # plain floats divide by zero with an error, not a NaN: no churner makes the recall NaN
        churners = np.asarray(tp + fn, dtype=float)
        recall = np.divide(np.asarray(tp, dtype=float), churners, out=np.full_like(churners, np.nan),
                           where=churners > 0)
        return {"roc_auc": auc, "precision": tp / contacted if contacted else np.nan * tp,
                "recall": float(recall) if recall.ndim == 0 else recall, "churners_contacted": tp}


def estimate(cells: Cells, draws: int = DRAWS, seed: int = SEED) -> dict[str, Interval]:
    """Expected ROC AUC, precision, recall and churners among the contacted rows, each with the
    range of the realised figure over simulated label sets (see the module docstring)."""
    n, sp, spq = cells.n, cells.sum_p, cells.sum_pq
    contacted = float(n[1].sum())
    # expected ordered pairs, self-pairs removed
    w_pos, w_neg = sp.sum(0), (n - sp).sum(0)
    pairs = w_pos.sum() * w_neg.sum() - spq.sum()
    below = np.cumsum(w_neg) - w_neg
    auc = (np.sum(w_pos * (below + 0.5 * w_neg)) - 0.5 * spq.sum()) / pairs if pairs > 0 else np.nan
    point = _figures(float(sp[1].sum()), float(sp[0].sum()), contacted, float(auc))

    used = n.sum(0) > 0  # simulate the occupied bins only
    rng = np.random.default_rng(seed)
    mean = np.clip(np.where(n > 0, sp / np.maximum(n, 1), 0.0), 0.0, 1.0)[:, used]
    counts = n[:, used].astype(np.int64)
    churners = rng.binomial(counts[None], mean[None], size=(draws, *counts.shape)).astype(np.float64)
    per_bin = churners.sum(1)
    sim = _figures(churners[:, 1].sum(-1), churners[:, 0].sum(-1), contacted,
                   _auc_of_bins(per_bin, counts.sum(0)[None] - per_bin))
    tail = (1 - LEVEL) / 2 * 100
    out = {}
    for k in METRICS:
        s = np.asarray(sim[k], np.float64)
        s = s[np.isfinite(s)]
        low, high = (np.percentile(s, [tail, 100 - tail]) if len(s) else (np.nan, np.nan))
        out[k] = Interval(float(point[k]), float(low), float(high))
    return out


def realised(cells: Cells) -> dict[str, float]:
    """The realised figures of the labelled cells (the same cells and ties as the estimate)."""
    pos = cells.pos
    auc = float(_auc_of_bins(pos.sum(0), (cells.n - pos).sum(0)))
    out = _figures(float(pos[1].sum()), float(pos[0].sum()), float(cells.n[1].sum()), auc)
    return {k: float(v) for k, v in out.items()}


@dataclass
class Decile:
    low: float  # score range of the group (bin edges)
    high: float
    rows: int
    expected: float  # Σp: churners the calibrated probabilities expect
    realised: float
    sd: float  # of the realised churners if the probabilities hold: sqrt(Σp(1 - p)) (Poisson-binomial)
    z: float  # (realised - expected) / sd

    @property
    def gap(self) -> float:
        """Realised minus expected churn rate."""
        return (self.realised - self.expected) / self.rows if self.rows else 0.0


@dataclass
class CalibrationCheck:
    """Realised against expected churners per score decile of the labelled rows."""

    deciles: list[Decile]
    chi2: float  # Σ z² over the deciles (the probabilities are given, not fitted here: df = deciles)
    p_value: float
    gap: float | None  # the largest tolerated |realised - expected churn rate| of a decile
    drifted: list[int] = field(default_factory=list)  # deciles (1 = lowest scores) off by >= gap and |z| >= Z_DRIFT

    @property
    def flagged(self) -> bool:
        return bool(self.drifted)


MIN_EXPECTED = 5.0  # a decile is checked when it expects at least this many churners and stayers


def check_calibration(cells: Cells, gap: float | None, groups: int = GROUPS) -> CalibrationCheck | None:
    """Per score decile of the labelled rows (groups of whole fine bins, each bin going to the
    group holding its middle row): realised and expected churners and their z. None without
    labelled rows. A decile expecting fewer than :data:`MIN_EXPECTED` churners or stayers is left
    out (its z is not near normal: one churner at score 0.01 in a decile of one row gives z 9.9)."""
    n, sp, spq, pos = (a.sum(0) for a in (cells.n, cells.sum_p, cells.sum_pq, cells.pos))
    rows = n.sum()
    if not rows:
        return None
    middle = np.cumsum(n) - n / 2
    group = np.minimum((middle * groups / rows).astype(np.int64), groups - 1)
    edges = np.r_[0.0, _edges(), 1.0]
    deciles = []
    for g in range(groups):
        inside = (group == g) & (n > 0)
        if not inside.any():
            continue
        b = np.flatnonzero(inside)
        e, r, v, m = sp[inside].sum(), pos[inside].sum(), spq[inside].sum(), n[inside].sum()
        if min(e, m - e) < MIN_EXPECTED:  # too few expected churners or stayers for a normal z
            continue
        z = (r - e) / np.sqrt(v) if v > 0 else (0.0 if r == e else np.inf * np.sign(r - e))
        deciles.append(Decile(float(edges[b[0]]), float(edges[b[-1] + 1]), int(round(m)), float(e), float(r),
                              float(np.sqrt(v)), float(z)))
    chi2 = float(sum(min(d.z ** 2, 1e12) for d in deciles))
    out = CalibrationCheck(deciles, chi2, float(stats.chi2.sf(chi2, len(deciles))), gap)
    if gap is not None:
        out.drifted = [i for i, d in enumerate(deciles, 1) if abs(d.z) >= Z_DRIFT and abs(d.gap) >= gap]
    return out


@dataclass
class PerformanceEstimate:
    """What the monitor reports: the estimate for every row, and on the labelled rows the estimate
    beside the realised figures and the calibration check."""

    threshold: float
    rows: int
    contacted: int
    estimate: dict[str, Interval]
    labelled_rows: int = 0
    labelled_estimate: dict[str, Interval] = field(default_factory=dict)
    realised: dict[str, float] = field(default_factory=dict)
    calibration: CalibrationCheck | None = None
    fingerprint: str = ""

    @property
    def trust(self) -> str:
        """``not trusted`` (calibration drift on the labelled rows), ``checked`` (labelled rows
        agree) or ``unchecked`` (no labels, or the check is off)."""
        if self.calibration is None or self.calibration.gap is None:
            return "unchecked"
        return "not trusted" if self.calibration.flagged else "checked"

    def reason(self) -> str:
        """One line: why the estimate is not to be trusted ('' when it is not flagged)."""
        cal = self.calibration
        if cal is None or not cal.flagged:
            return ""
        worst = max((cal.deciles[i - 1] for i in cal.drifted), key=lambda d: abs(d.gap))
        return (f"calibration drift: {len(cal.drifted)} of {len(cal.deciles)} score deciles of the "
                f"{self.labelled_rows:,} labelled rows are off (scores {worst.low:.2f}-{worst.high:.2f}: expected "
                f"churn rate {worst.expected / worst.rows:.1%}, realised {worst.realised / worst.rows:.1%}); the "
                "label-free performance estimate assumes calibrated probabilities and cannot be trusted for "
                "this batch")


def assess(summary: EstimateSummary, calibration_gap: float | None, draws: int = DRAWS) -> PerformanceEstimate:
    """The estimate of a merged batch summary, and the check against its labelled rows if any."""
    out = PerformanceEstimate(summary.threshold, summary.every.rows, int(round(summary.every.n[1].sum())),
                              estimate(summary.every, draws), fingerprint=f"{summary.fingerprint:016x}")
    lab = summary.labelled
    out.labelled_rows = lab.rows
    if out.labelled_rows:
        out.labelled_estimate = (out.estimate if out.labelled_rows == out.rows
                                 else estimate(lab, draws))
        out.realised = realised(lab)
        out.calibration = check_calibration(lab, calibration_gap)
    return out


@dataclass
class EstimateRecord:
    """One monitoring run's estimate (and realised figures, when its batch had labels)."""

    run_id: str
    started: float  # seconds since the epoch
    source: str
    model_version: str
    fingerprint: str
    trust: str
    rows: int
    labelled_rows: int
    estimate: dict[str, Interval] = field(default_factory=dict)
    realised: dict[str, float] = field(default_factory=dict)


def record_of(est: PerformanceEstimate, run_id: str, started: float, source: str, version: str) -> EstimateRecord:
    """The record of an estimate made now (not yet logged)."""
    return EstimateRecord(run_id, started, source, version, est.fingerprint, est.trust, est.rows, est.labelled_rows,
                          dict(est.estimate), dict(est.realised))


def alerts(result: PerformanceEstimate, reference_auc: float | None, roc_auc_drop: float | None) -> list[str]:
    """Calibration drift on the labelled rows; and unless every row is labelled, an estimated ROC AUC
    ``roc_auc_drop`` or more below the reference (the out-of-fold figure)."""
    out = [result.reason()] if result.calibration is not None and result.calibration.flagged else []
    auc = result.estimate["roc_auc"]
    # every row labelled: the realised figures and drift checks speak instead; a labelled slice does not
    if (result.labelled_rows == result.rows or roc_auc_drop is None or reference_auc is None
            or not np.isfinite(auc.value) or reference_auc - auc.value < roc_auc_drop):
        return out
    unlabelled = "no labels" if not result.labelled_rows else f"{result.rows - result.labelled_rows:,} rows unlabelled"
    return [*out, f"estimated performance ({unlabelled}): ROC AUC {auc.value:.4f} ({auc.low:.4f}-{auc.high:.4f}), "
                  f"{reference_auc - auc.value:.4f} below the reference"]
