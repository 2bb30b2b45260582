"""Metrics of (label, churn probability) pairs from a mergeable summary, in constant driver memory.

A :class:`ScoreSummary` of any number of rows has a fixed size. It holds:

* a fine histogram of the probability per class on the **logit scale**:
  ``evaluation.summary-bins`` equal-width bins of ``logit(p)`` over ``[-span, span]``
  (``evaluation.summary-logit-span``), plus one bin below and one above. The edges are kept as
  probabilities and a row's bin is found by ``searchsorted``, so the binning is monotone in ``p``:
  equal scores share a bin and a higher score never lands in a lower bin. Churn probabilities
  crowd near 0 (and, for separable rows, near 1), where logit bins stay narrow relative to ``p``;
  with the defaults (65,536 bins over ``|logit| <= 16``) a bin is 4.9e-4 wide in logit, i.e.
  1.2e-4 in probability around 0.5 and 0.05 % of ``p`` near 0;
* per bin the smallest and largest score seen and the sum of the scores: a bin whose smallest
  and largest score are equal holds a single value (isotonic calibration gives those), and its
  ties are exactly the ties scikit-learn counts half, so it adds no error;
* exact sums: rows, positives, Σp, Σp², Σy·p, Σ(y - p)² and Σ log loss (p clipped to
  [eps, 1 - eps] with float64's eps, as ``sklearn.metrics.log_loss``): Brier and log loss are exact;
* exact confusion counts (rows with ``p >= t``, and positives among them) at each of a given
  list of thresholds, counted row by row, not from the bins.

Summaries of two sets of rows merge into the summary of their union (:func:`merge`): counts
add, minima and maxima combine. Built per partition on the workers and merged there in a tree
(:func:`summaries_on_cluster`), only the merged summary reaches the driver. Sums of floats are
equal across merge orders to float64 rounding (relative 1e-15), counts exactly.

Error bounds of the values read from the histogram (every other value is exact):

* ROC AUC: a positive-negative pair in different bins is ordered exactly; a pair sharing a
  bin counts 1/2 (it may be 0, 1/2 or 1). The error is at most half the share of pairs sharing a
  bin of more than one distinct value: ``roc_auc_error_bound``.
* Average precision: a positive in bin b contributes recall step x precision; the precision of
  the cut it is in lies between (a + 1) / (a + c + r + 1) and (a + q) / (a + c + q), with a, c the
  positives and negatives above the bin and q, r those in it; the bound sums each bin's largest
  distance of these from the value used, (a + q) / (a + c + q + r): ``pr_auc_error_bound``.
* Precision at top k, lift and cumulative gains: the cut at the k-th row falls in one bin; its
  positives are split in proportion to the rows taken, and the true count lies between
  ``max(0, taken - negatives of the bin)`` and ``min(positives of the bin, taken)``.
* Calibration curve: its groups are unions of fine bins (quantile groups at bin resolution), and
  each point is that group's exact mean probability and churn rate.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client, Future
from sklearn.base import BaseEstimator, ClassifierMixin

from churn.clusters.scatter import scatter
from churn.config import setting
from churn.data.columns import LABEL_COLUMN

log = logging.getLogger(__name__)

EPS = float(np.finfo(np.float64).eps)  # log loss clips p to [EPS, 1 - EPS], as sklearn's log_loss
# scorers read from the histogram and the sums; any scorer of decisions (scikit-learn's "predict"
# scorers) is computed from the exact confusion counts at the threshold
AUC_SCORERS = ("roc_auc", "roc_auc_ovr", "roc_auc_ovo", "roc_auc_ovr_weighted", "roc_auc_ovo_weighted")
PROBABILITY_SCORERS = (*AUC_SCORERS, "average_precision", "neg_brier_score", "neg_log_loss", "d2_brier_score",
                       "d2_log_loss_score")
MERGE_FAN_IN = 4  # summaries merged per task in the tree reduction


@lru_cache(maxsize=8)
def _edges(bins: int, span: float) -> np.ndarray:
    z = np.linspace(-span, span, bins + 1)
    edges = 1.0 / (1.0 + np.exp(-z))
    edges = np.maximum.accumulate(edges)
    edges.flags.writeable = False
    return edges


def _bin_of(p: np.ndarray, bins: int, span: float) -> np.ndarray:
    """Each probability's bin: the number of edges <= p, as ``searchsorted(edges, p, "right")``.
    Guessed from the logit (8x faster than a binary search over 65k edges), then moved to the
    bin whose edges hold p, which the loop ends on whatever the guess's rounding."""
    edges = _edges(bins, span)
    with np.errstate(divide="ignore"):
        z = np.log(p / (1 - p))
    guess = np.floor((z + span) * (bins / (2 * span)))
    idx = np.clip(np.nan_to_num(guess, nan=0.0, posinf=bins, neginf=-1), -1, bins).astype(np.int64) + 1
    while True:
        down = (idx > 0) & (p < edges[np.maximum(idx - 1, 0)])
        up = (idx <= bins) & (p >= edges[np.minimum(idx, bins)])
        if not (down.any() or up.any()):
            return idx
        idx += up.astype(np.int64) - down.astype(np.int64)


def default_binning() -> tuple[int, float]:
    """(bins, logit span) from ``churn.evaluation.summary-bins`` and ``summary-logit-span``."""
    bins, span = int(setting("evaluation.summary-bins")), float(setting("evaluation.summary-logit-span"))
    if bins < 2 or not 0 < span <= 36:
        raise ValueError(f"churn.evaluation.summary-bins ({bins}) must be >= 2 and summary-logit-span ({span}) "
                         "in (0, 36]")
    return bins, span


@dataclass
class ScoreSummary:
    """A mergeable summary of (label, probability) pairs; see the module docstring."""

    bins: int
    span: float
    thresholds: tuple[float, ...]
    pos: np.ndarray = field(repr=False)  # per bin (bins + 2): positives
    neg: np.ndarray = field(repr=False)  # per bin: negatives
    sum_p: np.ndarray = field(repr=False)  # per bin: Σp
    lo: np.ndarray = field(repr=False)  # per bin: smallest p (inf when empty)
    hi: np.ndarray = field(repr=False)  # per bin: largest p (-inf when empty)
    tp: np.ndarray = field(repr=False)  # per threshold: positives with p >= t
    fp: np.ndarray = field(repr=False)  # per threshold: negatives with p >= t
    sums: dict[str, float] = field(default_factory=dict)  # p, p2, yp, sq_err, log_loss

    # -- building and merging ---------------------------------------------------------------

    @classmethod
    def empty(cls, thresholds: Sequence[float] = (), bins: int | None = None, span: float | None = None
              ) -> ScoreSummary:
        if bins is None or span is None:
            bins, span = default_binning()
        k, t = bins + 2, len(thresholds)
        return cls(bins, float(span), tuple(float(x) for x in thresholds), np.zeros(k, np.int64),
                   np.zeros(k, np.int64), np.zeros(k), np.full(k, np.inf), np.full(k, -np.inf),
                   np.zeros(t, np.int64), np.zeros(t, np.int64),
                   {"p": 0.0, "p2": 0.0, "yp": 0.0, "sq_err": 0.0, "log_loss": 0.0})

    @classmethod
    def of(cls, y: Any, p: Any, thresholds: Sequence[float] = (), bins: int | None = None,
           span: float | None = None) -> ScoreSummary:
        """The summary of labels ``y`` (0/1) and probabilities ``p``."""
        out = cls.empty(thresholds, bins, span)
        y = np.asarray(y).astype(np.int64).ravel()
        p = np.asarray(p, dtype=np.float64).ravel()
        if len(y) != len(p):
            raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
        if not len(p):
            return out
        if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
            bad = p[~(np.isfinite(p) & (p >= 0) & (p <= 1))][0]
            raise ValueError(f"churn probabilities must lie in [0, 1]; the model gave {bad!r}")
        if ((y != 0) & (y != 1)).any():
            raise ValueError("labels must be 0 or 1")
        k = out.bins + 2
        idx = _bin_of(p, out.bins, out.span)
        out.pos = np.bincount(idx, weights=y, minlength=k).astype(np.int64)
        out.neg = np.bincount(idx, minlength=k).astype(np.int64) - out.pos
        out.sum_p = np.bincount(idx, weights=p, minlength=k)
        np.minimum.at(out.lo, idx, p)
        np.maximum.at(out.hi, idx, p)
        yf = y.astype(np.float64)
        for j, t in enumerate(out.thresholds):
            hit = p >= t
            out.tp[j] = int(np.count_nonzero(hit & (y == 1)))
            out.fp[j] = int(np.count_nonzero(hit)) - out.tp[j]
        pc = np.clip(p, EPS, 1 - EPS)
        out.sums = {"p": float(p.sum()), "p2": float(p @ p), "yp": float(yf @ p),
                    "sq_err": float(np.square(yf - p).sum()),
                    "log_loss": float(-(np.log(pc[y == 1]).sum() + np.log(1 - pc[y == 0]).sum()))}
        return out

    def merge(self, other: ScoreSummary) -> ScoreSummary:
        """The summary of both summaries' rows."""
        if (self.bins, self.span, self.thresholds) != (other.bins, other.span, other.thresholds):
            raise ValueError("summaries with different bins, spans or thresholds cannot be merged")
        return ScoreSummary(self.bins, self.span, self.thresholds, self.pos + other.pos, self.neg + other.neg,
                            self.sum_p + other.sum_p, np.minimum(self.lo, other.lo), np.maximum(self.hi, other.hi),
                            self.tp + other.tp, self.fp + other.fp,
                            {k: self.sums[k] + other.sums[k] for k in self.sums})

    # -- exact counts and sums --------------------------------------------------------------

    @property
    def rows(self) -> int:
        return int(self.pos.sum() + self.neg.sum())

    @property
    def positives(self) -> int:
        return int(self.pos.sum())

    @property
    def negatives(self) -> int:
        return int(self.neg.sum())

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays: constant in the rows."""
        return sum(a.nbytes for a in (self.pos, self.neg, self.sum_p, self.lo, self.hi, self.tp, self.fp))

    def _need_rows(self) -> None:
        if not self.rows:
            raise ValueError("no rows to evaluate: the summary is empty")

    def _need_both(self, metric: str) -> None:
        self._need_rows()
        if not self.positives or not self.negatives:
            raise ValueError(f"{metric} needs rows of both classes; the rows hold {self.positives:,} positive and "
                             f"{self.negatives:,} negative")

    def brier(self) -> float:
        """Mean (y - p)², exact."""
        self._need_rows()
        return self.sums["sq_err"] / self.rows

    def log_loss(self) -> float:
        """Mean log loss, exact (p clipped to [eps, 1 - eps] as scikit-learn does)."""
        self._need_rows()
        return self.sums["log_loss"] / self.rows

    def positive_rate(self) -> float:
        self._need_rows()
        return self.positives / self.rows

    def confusion(self, threshold: float) -> tuple[int, int, int, int]:
        """(tn, fp, fn, tp) of the decision ``p >= threshold``, exact; ``threshold`` must be one of
        the summary's thresholds."""
        j = self._threshold_index(threshold)
        tp, fp = int(self.tp[j]), int(self.fp[j])
        return self.negatives - fp, fp, self.positives - tp, tp

    def _threshold_index(self, threshold: float) -> int:
        for j, t in enumerate(self.thresholds):
            if t == float(threshold):
                return j
        raise ValueError(f"threshold {threshold!r} was not counted: the summary counted decisions at "
                         f"{', '.join(f'{t:g}' for t in self.thresholds) or 'no threshold'}")

    # -- from the histogram, with error bounds ----------------------------------------------

    def _descending(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per bin from the highest scores down: positives, negatives, and cumulative sums of both."""
        pos, neg = self.pos[::-1].astype(np.float64), self.neg[::-1].astype(np.float64)
        return pos, neg, np.cumsum(pos), np.cumsum(neg)

    def _mixed(self) -> np.ndarray:
        """Per bin (descending): the bin holds more than one distinct score."""
        return (self.lo < self.hi)[::-1]

    def roc_auc(self) -> tuple[float, float]:
        """(ROC AUC, error bound): pairs sharing a bin count 1/2."""
        self._need_both("ROC AUC")
        pos, neg, cp, _ = self._descending()
        pairs = float(self.positives) * float(self.negatives)
        value = float(np.sum(neg * (cp - pos + 0.5 * pos)) / pairs)
        bound = float(0.5 * np.sum((pos * neg)[self._mixed()]) / pairs)
        return value, bound

    def average_precision(self) -> tuple[float, float]:
        """(average precision as scikit-learn defines it, error bound): each bin one cut."""
        self._need_both("average precision")
        pos, neg, cp, cn = self._descending()
        total = float(self.positives)
        has = pos > 0
        value = float(np.sum(pos[has] / total * cp[has] / (cp[has] + cn[has])))
        m = has & self._mixed()
        a, c, q, r = cp[m] - pos[m], cn[m] - neg[m], pos[m], neg[m]
        used = (a + q) / (a + c + q + r)
        upper, lower = (a + q) / (a + c + q), (a + 1) / (a + c + 1 + r)
        bound = float(np.sum(q / total * np.maximum(upper - used, used - lower)))
        return value, bound

    def top(self, k: int) -> tuple[float, float]:
        """(positives among the ``k`` highest-scored rows, error bound)."""
        self._need_rows()
        k = int(min(max(k, 0), self.rows))
        if k == 0:
            return 0.0, 0.0
        pos, neg, cp, cn = self._descending()
        cr = cp + cn
        b = int(np.searchsorted(cr, k, side="left"))
        n_b = pos[b] + neg[b]
        above, taken = cp[b] - pos[b], k - (cr[b] - n_b)
        if taken == n_b:
            return float(cp[b]), 0.0
        est = above + pos[b] * taken / n_b
        low, high = above + max(0.0, taken - neg[b]), above + min(pos[b], taken)
        return float(est), float(max(est - low, high - est))

    def precision_at(self, fraction: float) -> tuple[float, float]:
        """(share of positives among the top ``fraction`` of rows by score, error bound); the rows
        taken are ``max(1, round(fraction * rows))``."""
        k = max(1, int(round(fraction * self.rows)))
        est, err = self.top(k)
        return est / k, err / k

    def lift(self, groups: int = 10) -> pd.DataFrame:
        """Churn rate, lift and cumulative gains per score decile (decile 1 = highest scores), with
        the error bound of the churn rate and of the cumulative gain. Deciles hold the rows
        ``numpy.array_split`` gives them."""
        self._need_rows()
        n, total = self.rows, self.positives
        sizes = [n // groups + (1 if i < n % groups else 0) for i in range(groups)]
        cuts = np.cumsum(sizes)
        tops = [self.top(int(k)) for k in cuts]
        base = total / n
        out, prev = [], (0.0, 0.0)
        for i, (size, cur) in enumerate(zip(sizes, tops, strict=True), 1):
            positives, err = cur[0] - prev[0], cur[1] + prev[1]
            rate = positives / size if size else 0.0
            out.append({"decile": i, "rows": size, "positives": positives, "churn_rate": rate,
                        "lift": rate / base if base else 0.0,
                        "cumulative_gain": cur[0] / total if total else 0.0,
                        "churn_rate_error_bound": err / size if size else 0.0,
                        "cumulative_gain_error_bound": cur[1] / total if total else 0.0})
            prev = cur
        return pd.DataFrame(out)

    # -- curves for the plots -----------------------------------------------------------------

    def roc_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(false positive rate, true positive rate) at every bin boundary, from (0, 0) to (1, 1)."""
        self._need_both("the ROC curve")
        pos, neg, cp, cn = self._descending()
        keep = (pos + neg) > 0
        return np.r_[0.0, cn[keep] / self.negatives], np.r_[0.0, cp[keep] / self.positives]

    def pr_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(precision, recall) at every bin boundary, recall falling to 0 (scikit-learn's order)."""
        self._need_both("the precision-recall curve")
        pos, neg, cp, cn = self._descending()
        keep = (pos + neg) > 0
        precision, recall = cp[keep] / (cp[keep] + cn[keep]), cp[keep] / self.positives
        return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0]

    def calibration_curve(self, groups: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(observed churn rate, mean probability, rows) per quantile group of rows, cut at fine-bin
        boundaries (each fine bin goes to the group holding its middle row); empty groups dropped.
        Each point is exact for the rows of its group."""
        self._need_rows()
        count = (self.pos + self.neg).astype(np.float64)
        middle = np.cumsum(count) - count / 2
        group = np.minimum((middle * groups / self.rows).astype(np.int64), groups - 1)
        rows = np.bincount(group, weights=count, minlength=groups)
        pos = np.bincount(group, weights=self.pos.astype(np.float64), minlength=groups)
        sp = np.bincount(group, weights=self.sum_p, minlength=groups)
        keep = rows > 0
        return pos[keep] / rows[keep], sp[keep] / rows[keep], rows[keep]


def merge(*summaries: ScoreSummary | dict[str, ScoreSummary]) -> Any:
    """The merge of summaries (or of dicts of summaries with the same keys)."""
    first, *rest = summaries
    if isinstance(first, dict):
        return {k: merge(*(s[k] for s in summaries)) for k in first}
    for s in rest:
        first = first.merge(s)
    return first


# -- scoring names ------------------------------------------------------------------------------

def check_scoring(scoring: str) -> None:
    """Raise ValueError when ``scoring`` (a scikit-learn scorer name) cannot be read from a summary."""
    from churn.modeling.compat import scorer_response_method

    if scoring in PROBABILITY_SCORERS or scorer_response_method(scoring) == "predict":
        return
    raise ValueError(f"scoring {scoring!r} cannot be computed from per-partition score summaries; use one of "
                     f"{', '.join(PROBABILITY_SCORERS)} or a scorer of decisions (accuracy, f1, ...)")


def score_from(summary: ScoreSummary, scoring: str, threshold: float) -> float:
    """``scoring`` (a scikit-learn scorer name, its sign: greater is better) of the summarised rows;
    scorers of decisions get them at ``threshold`` (one of the summary's thresholds), exactly."""
    check_scoring(scoring)
    if scoring in AUC_SCORERS:
        return summary.roc_auc()[0]
    if scoring == "average_precision":
        return summary.average_precision()[0]
    if scoring in ("neg_brier_score", "d2_brier_score"):
        brier = summary.brier()
        if scoring == "neg_brier_score":
            return -brier
        rate = summary.positive_rate()
        return 1.0 - brier / (rate * (1 - rate)) if 0 < rate < 1 else float("nan")
    if scoring in ("neg_log_loss", "d2_log_loss_score"):
        loss = summary.log_loss()
        if scoring == "neg_log_loss":
            return -loss
        rate = float(np.clip(summary.positive_rate(), EPS, 1 - EPS))
        null = -(rate * np.log(rate) + (1 - rate) * np.log1p(-rate))
        return float(1.0 - loss / null) if 0 < summary.positive_rate() < 1 else float("nan")
    return _decision_score(summary, scoring, threshold)


def _decision_score(summary: ScoreSummary, scoring: str, threshold: float) -> float:
    """A scorer of decisions on the four (label, decision) cells, weighted by their exact counts."""
    from sklearn.metrics import get_scorer

    tn, fp, fn, tp = summary.confusion(threshold)
    y, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    weights = np.array([tn, fp, fn, tp], dtype=np.float64)
    keep = weights > 0
    return float(get_scorer(scoring)(Decisions(pred), np.flatnonzero(keep).reshape(-1, 1), y[keep],
                                     sample_weight=weights[keep]))


class Decisions(ClassifierMixin, BaseEstimator):
    """Decisions already made, replayed to a scikit-learn scorer (X: the rows' positions): no
    scikit-learn class replays stored predictions, and this keeps each scorer's own definition."""

    classes_ = np.array([0, 1])

    def __init__(self, decisions: np.ndarray):
        self.decisions = decisions

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.decisions[np.asarray(X).ravel()]


# -- on the cluster -------------------------------------------------------------------------------

def _summarise_partition(frame: pd.DataFrame, model: Any, features: list[str], thresholds: tuple[float, ...],
                         raw: bool, binning: tuple[int, float]) -> dict[str, ScoreSummary]:
    """The summaries of one partition: ``proba`` (the model's churn probability) and, with ``raw``,
    ``raw`` (a ChurnClassifier's first member's score, before the calibration map)."""
    bins, span = binning
    if len(frame) == 0:
        out = {"proba": ScoreSummary.empty(thresholds, bins, span)}
        return out | ({"raw": ScoreSummary.empty(thresholds, bins, span)} if raw else {})
    X, y = frame[features], frame[LABEL_COLUMN].to_numpy(np.int64)
    if raw:
        scores = model.scores(X)
        return {"proba": ScoreSummary.of(y, model.calibrator.predict(scores), thresholds, bins, span),
                "raw": ScoreSummary.of(y, scores[:, 0], thresholds, bins, span)}
    return {"proba": ScoreSummary.of(y, model.predict_proba(X)[:, 1], thresholds, bins, span)}


def _tree_merge(client: Client, futures: list[Future]) -> Future:
    while len(futures) > 1:
        futures = [client.submit(merge, *futures[i:i + MERGE_FAN_IN], pure=False)
                   for i in range(0, len(futures), MERGE_FAN_IN)]
    return futures[0]


def summaries_on_cluster(ddf: Any, model: Any, features: list[str], client: Client,
                         thresholds: Sequence[float] = (), *, raw: bool = False) -> dict[str, ScoreSummary]:
    """Summaries of ``ddf``'s rows in one pass: ``proba`` (``model.predict_proba``'s churn column)
    and, with ``raw``, ``raw`` (the first member's score of a ``ChurnClassifier``: it must be a
    probability). Each partition is scored and summarised on a worker, the summaries are merged in
    a tree of tasks on the workers, and only the merged one comes back: its size does not depend
    on the rows.

    The model is scattered once to every worker and each partition task refers to it (dask-ml's
    ``ParallelPostFit`` and ``map_partitions`` handed a Future embed it in every task instead).
    """
    binning = default_binning()
    thresholds = tuple(float(t) for t in thresholds)
    [model_future] = scatter(client, [model], broadcast=True)
    futures = [client.submit(_summarise_partition, part, model_future, features, thresholds, raw, binning,
                             pure=False)
               for part in client.compute(ddf.to_delayed())]
    if not futures:
        empty = {"proba": ScoreSummary.empty(thresholds, *binning)}
        return empty | ({"raw": ScoreSummary.empty(thresholds, *binning)} if raw else {})
    return _tree_merge(client, futures).result()


def summarise_on_cluster(ddf: Any, model: Any, features: list[str], client: Client,
                         thresholds: Sequence[float] = ()) -> ScoreSummary:
    """The summary of ``model.predict_proba``'s churn column and the labels on ``ddf``'s rows,
    partition by partition on the cluster (see :func:`summaries_on_cluster`)."""
    return summaries_on_cluster(ddf, model, features, client, thresholds)["proba"]


# -- per segment: one summary per level of each categorical column ---------------------------------

SEGMENT_BINS = 2048  # logit bins of a segment's summary: 82 KB each, so dozens of levels stay small
MAX_SEGMENT_LEVELS = 64  # a column with more levels is not summarised (its summaries would grow with them)
MISSING_LEVEL = "(missing)"


@dataclass
class SegmentSummaries:
    """Per categorical column, per level: the :class:`ScoreSummary` of the rows holding that level
    (:data:`SEGMENT_BINS` logit bins over the same span, the decision thresholds counted exactly).
    A blank is its own level, :data:`MISSING_LEVEL`. Mergeable like a ScoreSummary: levels of the
    same column add up, a level only one side saw is kept as it is. A column with more than
    ``max_levels`` levels (on one partition or after a merge) is dropped and named in ``too_many``."""

    levels: dict[str, dict[str, ScoreSummary]]
    too_many: tuple[str, ...] = ()
    max_levels: int = MAX_SEGMENT_LEVELS

    @classmethod
    def of(cls, frame: pd.DataFrame, y: Any, p: Any, columns: Sequence[str], thresholds: Sequence[float] = (),
           bins: int = SEGMENT_BINS, span: float | None = None, max_levels: int = MAX_SEGMENT_LEVELS
           ) -> SegmentSummaries:
        """The summaries of labels ``y`` and probabilities ``p`` of ``frame``'s rows, by level of
        each of ``columns``. Each row's bin is found once; a column's summaries come from
        bincounts over (level, bin), not one pass per level."""
        if span is None:
            span = default_binning()[1]
        whole = ScoreSummary.of(y, p, thresholds, bins, span)  # checks y and p once
        if not whole.rows:
            return cls({}, (), max_levels)
        y = np.asarray(y).astype(np.int64).ravel()
        p = np.asarray(p, dtype=np.float64).ravel()
        k = bins + 2
        idx = _bin_of(p, bins, span) if len(p) else np.zeros(0, np.int64)
        pc = np.clip(p, EPS, 1 - EPS)
        yf = y.astype(np.float64)
        row_sums = {"p": p, "p2": p * p, "yp": yf * p, "sq_err": np.square(yf - p),
                    "log_loss": -np.where(y == 1, np.log(pc), np.log1p(-pc))}
        hits = [p >= t for t in whole.thresholds]
        levels: dict[str, dict[str, ScoreSummary]] = {}
        too_many = []
        for col in columns:
            codes, uniques = pd.factorize(frame[col].astype(object), use_na_sentinel=True)
            names = [str(u) for u in uniques]
            if (codes < 0).any():
                codes = np.where(codes < 0, len(names), codes)
                names.append(MISSING_LEVEL)
            n = len(names)
            if n > max_levels:
                too_many.append(col)
                continue
            key = codes * k + idx
            count = np.bincount(key, minlength=n * k).reshape(n, k)
            pos = np.bincount(key, weights=yf, minlength=n * k).reshape(n, k).astype(np.int64)
            sum_p = np.bincount(key, weights=p, minlength=n * k).reshape(n, k)
            lo, hi = np.full(n * k, np.inf), np.full(n * k, -np.inf)
            np.minimum.at(lo, key, p)
            np.maximum.at(hi, key, p)
            lo, hi = lo.reshape(n, k), hi.reshape(n, k)
            tp = np.array([np.bincount(codes, weights=(h & (y == 1)), minlength=n) for h in hits]).reshape(-1, n)
            fp = np.array([np.bincount(codes, weights=(h & (y == 0)), minlength=n) for h in hits]).reshape(-1, n)
            sums = {name: np.bincount(codes, weights=v, minlength=n) for name, v in row_sums.items()}
            levels[col] = {
                name: ScoreSummary(bins, float(span), whole.thresholds, pos[i], count[i] - pos[i], sum_p[i], lo[i],
                                   hi[i], tp[:, i].astype(np.int64), fp[:, i].astype(np.int64),
                                   {s: float(v[i]) for s, v in sums.items()})
                for i, name in enumerate(names)}
        return cls(levels, tuple(too_many), max_levels)

    def merge(self, other: SegmentSummaries) -> SegmentSummaries:
        """The segment summaries of both sides' rows."""
        too_many = set(self.too_many) | set(other.too_many)
        levels: dict[str, dict[str, ScoreSummary]] = {}
        for col in dict.fromkeys([*self.levels, *other.levels]):
            if col in too_many:
                continue
            mine, theirs = self.levels.get(col, {}), other.levels.get(col, {})
            both = {lvl: (mine[lvl].merge(theirs[lvl]) if lvl in mine and lvl in theirs
                          else mine[lvl] if lvl in mine else theirs[lvl]) for lvl in dict.fromkeys([*mine, *theirs])}
            if len(both) > self.max_levels:
                too_many.add(col)
                continue
            levels[col] = both
        return SegmentSummaries(levels, tuple(sorted(too_many)), self.max_levels)

    @property
    def nbytes(self) -> int:
        """Bytes of the summaries' arrays: the levels times a fixed size, whatever the rows."""
        return sum(s.nbytes for lv in self.levels.values() for s in lv.values())


def _merge_segments(*parts: SegmentSummaries) -> SegmentSummaries:
    first, *rest = parts
    for s in rest:
        first = first.merge(s)
    return first


def _segment_partition(frame: pd.DataFrame, model: Any, features: list[str], columns: tuple[str, ...],
                       thresholds: tuple[float, ...], bins: int, span: float) -> SegmentSummaries:
    """The segment summaries of one partition, scored by ``model.predict_proba``."""
    if len(frame) == 0:
        return SegmentSummaries({})
    p = model.predict_proba(frame[features])[:, 1]
    return SegmentSummaries.of(frame, frame[LABEL_COLUMN].to_numpy(np.int64), p, columns, thresholds, bins, span)


def segment_summaries_on_cluster(ddf: Any, model: Any, features: list[str], columns: Sequence[str],
                                 client: Client, thresholds: Sequence[float] = (), bins: int = SEGMENT_BINS
                                 ) -> SegmentSummaries:
    """:class:`SegmentSummaries` of ``ddf``'s rows by level of each of ``columns``: each partition
    scored and summarised on a worker (the model scattered once to every worker), merged in a tree
    of tasks there; only the merged summaries come back (their size grows with the levels, not the
    rows)."""
    span = default_binning()[1]
    thresholds = tuple(float(t) for t in thresholds)
    [model_future] = scatter(client, [model], broadcast=True)
    futures = [client.submit(_segment_partition, part, model_future, features, tuple(columns), thresholds, bins,
                             span, pure=False)
               for part in client.compute(ddf.to_delayed())]
    if not futures:
        return SegmentSummaries({})
    while len(futures) > 1:
        futures = [client.submit(_merge_segments, *futures[i:i + MERGE_FAN_IN], pure=False)
                   for i in range(0, len(futures), MERGE_FAN_IN)]
    return futures[0].result()
