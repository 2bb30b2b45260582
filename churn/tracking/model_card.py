"""The model card of a registered version: one HTML page and its Markdown, logged with the version.

:func:`card_facts` gathers what the card says while the job's run is open (before the version is
registered): the data and rows, the champion and why it won, the test metrics with bootstrap
intervals, the calibration, the threshold and the campaign economics behind it, performance by
segment (one summary per level of each categorical column, built on the cluster) and the limits.
:func:`log_card` renders them for the new version (its URI in the commands) and logs
``model_card/card.html``, ``card.md``, ``card.json`` (the figures) and ``calibration.png`` to the
run; :func:`card_link` is the Markdown line the version's description carries to it.

Bootstrap intervals (:func:`poisson_bootstrap`) come from the merged test summary, not from rows:
in the Poisson bootstrap every row's weight is an independent Poisson(1) draw (Hanley & MacGibbon
2006; Chamandy et al. 2012, for data too large to resample), so a cell of the summary holding c
rows (a histogram bin of one class, or a cell of the confusion matrix at the threshold) weighs
Poisson(c), independently of every other cell. A replicate is therefore drawn cell by cell from
the summary already in the driver: no row is gathered and no second pass over the test split runs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from churn.config import EconomicsSpec, JobSpec
from churn.config.families import readable
from churn.data.manifest import Manifest
from churn.modeling.calibrate import MIN_GAIN, STACK, Champion
from churn.modeling.evaluate import Evaluation, Threshold, contact_profit
from churn.modeling.search import SearchResult
from churn.modeling.summary import (
    EPS,
    SEGMENT_BINS,
    ScoreSummary,
    SegmentSummaries,
    segment_summaries_on_cluster,
)
from churn.tracking import plots

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("model_card.html")
FOLDER = "model_card"  # the run's artifact folder of the card
REPLICATES = 1000  # bootstrap replicates of the test metrics
SEGMENT_REPLICATES = 200  # ... of each segment's ROC AUC
LEVEL = 0.95  # the intervals' coverage
MIN_SEGMENT_ROWS = 100  # a level with fewer test rows gets no row in the segment table
MIN_SEGMENT_CLASS = 10  # ... nor one with fewer churners or stayers than this
CHUNK_CELLS = 1_000_000  # Poisson draws held at once (replicates x cells)
GROUPS = 1024  # at most this many cells per class in a replicate (runs of adjacent bins)
SEGMENT_GROUPS = 256

# the sections, in order: (id, title); the test reads them back from both renderings
SECTIONS = (
    ("purpose", "What the model is for"),
    ("data", "Data: the table and the rows it was fitted on"),
    ("champion", "The champion and why it won"),
    ("test-metrics", "Test metrics with bootstrap intervals"),
    ("calibration", "Calibration"),
    ("threshold", "Threshold and campaign economics"),
    ("segments", "Performance by segment"),
    ("limits", "Limits"),
    ("usage", "How to score and serve it"),
)


# -- the bootstrap ------------------------------------------------------------------------------------

def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    finite = values[np.isfinite(values)]
    if not len(finite):
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def _histogram_replicates(summary: ScoreSummary, replicates: int, rng: np.random.Generator,
                          groups: int = GROUPS) -> dict[str, np.ndarray]:
    """ROC AUC, average precision, Brier and log loss of each replicate, from Poisson draws of the
    class counts of at most ``groups`` runs of adjacent occupied bins (highest scores first, as
    :meth:`ScoreSummary.roc_auc` reads them; every occupied bin is its own group when there are no
    more than ``groups``), centred on the summary's own values."""
    pos, neg = summary.pos[::-1].astype(np.float64), summary.neg[::-1].astype(np.float64)
    used = (pos + neg) > 0
    pos, neg, sum_p = pos[used], neg[used], summary.sum_p[::-1][used]
    mean_p = sum_p / (pos + neg)  # each bin's rows scored at its mean: the bins are narrow (module docstring)
    mp = np.clip(mean_p, EPS, 1 - EPS)
    # per bin and class: the loss of its rows (Brier, log loss)
    loss = {"brier": (pos * np.square(1 - mean_p), neg * np.square(mean_p)),
            "log_loss": (pos * -np.log(mp), neg * -np.log1p(-mp))}
    if len(pos) > groups:  # runs of adjacent bins holding about equal rows (the calibration curve's grouping)
        count = pos + neg
        group = np.minimum(((np.cumsum(count) - count / 2) * groups / count.sum()).astype(np.int64), groups - 1)
        pos, neg = np.bincount(group, pos), np.bincount(group, neg)
        loss = {k: (np.bincount(group, a), np.bincount(group, b)) for k, (a, b) in loss.items()}
        keep = (pos + neg) > 0
        pos, neg = pos[keep], neg[keep]
        loss = {k: (a[keep], b[keep]) for k, (a, b) in loss.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        per_pos = {k: np.where(pos > 0, a / pos, 0.0) for k, (a, _) in loss.items()}
        per_neg = {k: np.where(neg > 0, b / neg, 0.0) for k, (_, b) in loss.items()}

    def metrics(P: np.ndarray, N: np.ndarray) -> dict[str, np.ndarray]:
        tp, tn = P.sum(axis=-1), N.sum(axis=-1)
        cp, cn = np.cumsum(P, axis=-1), np.cumsum(N, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {"roc_auc": np.sum(N * (cp - 0.5 * P), axis=-1) / (tp * tn),
                   "pr_auc": np.sum(np.where(P > 0, P * cp / np.maximum(cp + cn, 1), 0.0), axis=-1) / tp}
            out |= {k: (P @ per_pos[k] + N @ per_neg[k]) / (tp + tn) for k in loss}
        return out

    parts: list[dict[str, np.ndarray]] = []
    step = max(1, CHUNK_CELLS // max(1, 2 * len(pos)))
    for start in range(0, replicates, step):
        n = min(step, replicates - start)
        parts.append(metrics(rng.poisson(pos, size=(n, len(pos))).astype(np.float64),
                             rng.poisson(neg, size=(n, len(neg))).astype(np.float64)))
    # the same formulas at the summary's own counts, moved to the values the run reports: zero for the
    # two AUCs unless bins were grouped (ties within a group count half), the bins' spread for the losses
    at = metrics(pos, neg)
    reported = {"roc_auc": summary.roc_auc()[0], "pr_auc": summary.average_precision()[0],
                "brier": summary.brier(), "log_loss": summary.log_loss()}
    return {k: np.concatenate([p[k] for p in parts]) + (reported[k] - float(at[k])) for k in reported}


def _decision_replicates(summary: ScoreSummary, threshold: float, economics: EconomicsSpec | None,
                         replicates: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Precision, recall, contact rate (and profit) at ``threshold`` of each replicate: Poisson draws
    of the four exact confusion cells."""
    tn, fp, fn, tp = (rng.poisson(c, size=replicates).astype(np.float64) for c in summary.confusion(threshold))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "contact_rate": (tp + fp) / (tp + fp + fn + tn)}
    if economics is not None:
        churner, stayer = contact_profit(np.array([1, 0]), economics)
        out["profit"] = tp * churner + fp * stayer
    return out


def poisson_bootstrap(summary: ScoreSummary, threshold: float | None = None, economics: EconomicsSpec | None = None,
                      replicates: int = REPLICATES, seed: int = 0, level: float = LEVEL
                      ) -> dict[str, tuple[float, float]]:
    """Percentile intervals (``level``) of ``replicates`` Poisson bootstrap replicates of a score
    summary's metrics, drawn from the summary's cells (module docstring); deterministic in ``seed``.

    For the figures at ``threshold`` (one of the summary's thresholds: precision, recall, contact
    rate, and profit with ``economics``) each replicate is exactly what the row-level Poisson
    bootstrap gives. So it is for ROC AUC and average precision (read from the histogram) while the
    summary holds at most :data:`GROUPS` occupied bins; above that, runs of adjacent bins are drawn
    together (ties within a run count half) and the replicates are moved by the gap between that
    estimator and the reported one. Brier and log loss weigh each bin's rows at the bin's mean
    probability (a bin spans at most 1.2e-4 in probability with the default binning), moved
    likewise to the exact value."""
    rng = np.random.default_rng(seed)
    reps = _histogram_replicates(summary, replicates, rng)
    if threshold is not None:
        reps |= _decision_replicates(summary, threshold, economics, replicates, rng)
    return {k: _percentiles(v, level) for k, v in reps.items()}


# -- the facts ------------------------------------------------------------------------------------------

@dataclass
class Segment:
    """One level of one categorical column on the test split."""

    column: str
    level: str
    rows: int
    positives: int
    contacted: int
    roc_auc: float | None = None  # None: too few rows or too few of a class
    roc_auc_error_bound: float | None = None
    roc_auc_interval: tuple[float, float] | None = None
    true_positives: int = 0  # contacted churners

    @property
    def shown(self) -> bool:
        return self.roc_auc is not None

    @property
    def churn_rate(self) -> float:
        return self.positives / self.rows

    @property
    def contact_rate(self) -> float:
        return self.contacted / self.rows

    @property
    def precision(self) -> float | None:
        return None if not self.contacted else self.true_positives / self.contacted


def segments_from(summaries: SegmentSummaries, threshold: float, columns: list[str], seed: int) -> list[Segment]:
    """The segment table's rows: every level of ``columns`` (levels by rows, most first); a level
    with :data:`MIN_SEGMENT_ROWS` rows and :data:`MIN_SEGMENT_CLASS` of each class gets its ROC AUC
    with a bootstrap interval."""
    out = []
    for col in columns:
        for level, s in sorted(summaries.levels.get(col, {}).items(), key=lambda kv: (-kv[1].rows, kv[0])):
            _, fp, _, tp = s.confusion(threshold)
            seg = Segment(col, level, s.rows, s.positives, tp + fp, true_positives=tp)
            if s.rows >= MIN_SEGMENT_ROWS and min(s.positives, s.negatives) >= MIN_SEGMENT_CLASS:
                seg.roc_auc, seg.roc_auc_error_bound = s.roc_auc()
                rng = np.random.default_rng([seed, len(out)])
                reps = _histogram_replicates(s, SEGMENT_REPLICATES, rng, SEGMENT_GROUPS)
                seg.roc_auc_interval = _percentiles(reps["roc_auc"], LEVEL)
            out.append(seg)
    return out


@dataclass
class CardFacts:
    """Everything the card says but the version's number, gathered while the run is open."""

    job: JobSpec
    manifest: Manifest
    families: dict[str, SearchResult]
    champion: Champion
    test: Evaluation
    rows: dict[str, int]
    threshold: Threshold
    notes: dict[str, str]
    calibration: str  # the registered model's calibration method
    registered_rows: str  # what the registered model learned from, in words
    run_id: str
    experiment_id: str
    tracking_uri: str
    example: pd.DataFrame  # a feature row, for the request example
    intervals: dict[str, tuple[float, float]]
    segments: list[Segment]
    too_many_levels: tuple[str, ...]
    calibration_png: bytes
    full_data: Any = None  # the full-data Choice, when that fit ran
    test_by_model: dict[str, Evaluation] = field(default_factory=dict)
    raw_brier: float | None = None  # the best member's Brier on the test split before the calibration map
    seconds: float = 0.0  # what gathering these took


def card_facts(job: JobSpec, manifest: Manifest, families: dict[str, SearchResult], champion: Champion,
               test: Evaluation, rows: dict[str, int], threshold: Threshold, notes: dict[str, str], *,
               calibration: str, registered_rows: str, model: Any, test_ddf: Any, client: Any, run_id: str,
               experiment_id: str, tracking_uri: str, example: pd.DataFrame, full_data: Any = None,
               test_by_model: dict[str, Evaluation] | None = None, raw: ScoreSummary | None = None) -> CardFacts:
    """The card's facts: ``model`` is the one the test metrics are of (before finalising), scored
    again on ``test_ddf`` partition by partition on the cluster for the segment summaries (only
    they come back); the bootstrap runs on ``test.summary`` in the driver."""
    if test.summary is None:
        raise ValueError("the evaluation holds no score summary to bootstrap")
    started = time.perf_counter()
    columns = list(job.table.categorical)
    segments = (segment_summaries_on_cluster(test_ddf, model, job.table.features, columns, client, (threshold.value,))
                if columns else SegmentSummaries({}))
    at_segments = time.perf_counter()
    intervals = poisson_bootstrap(test.summary, threshold.value, job.evaluation.economics, REPLICATES, job.seed)
    table = segments_from(segments, threshold.value, columns, job.seed)
    at_bootstrap = time.perf_counter()
    fig = plots.calibration(test.summary, raw, calibration)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    facts = CardFacts(job, manifest, families, champion, test, rows, threshold, dict(notes), calibration,
                      registered_rows, run_id, experiment_id, tracking_uri, example.head(1), intervals, table,
                      segments.too_many, buf.getvalue(), full_data, dict(test_by_model or {}),
                      None if raw is None else raw.brier())
    facts.seconds = time.perf_counter() - started
    log.info("model card: %d segments summarised on the cluster in %.2f s, %d + %d x %d bootstrap replicates in "
             "%.2f s, calibration figure in %.2f s", len(table), at_segments - started, REPLICATES,
             sum(s.shown for s in table), SEGMENT_REPLICATES, at_bootstrap - at_segments,
             facts.seconds - (at_bootstrap - started))
    return facts


# -- the document ------------------------------------------------------------------------------------------

@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]
    text: tuple[int, ...] = (0,)  # the columns of words, left-aligned (numbers are right-aligned)


@dataclass
class Code:
    text: str


@dataclass
class Figure:
    png: bytes
    name: str  # the file beside card.md
    caption: str


@dataclass
class Bullets:
    items: list[str]


Block = str | Table | Code | Figure | Bullets  # a str is a paragraph


def _f(x: float | None, digits: int = 4) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f} %"


def _ci(iv: tuple[float, float] | None, digits: int = 4, pct: bool = False) -> str:
    if iv is None or not all(np.isfinite(iv)):
        return "—"
    fmt = (lambda v: _pct(v, digits)) if pct else (lambda v: _f(v, digits))
    return f"[{fmt(iv[0])}, {fmt(iv[1])}]"


def _money(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:,.2f}"


def _default_economics(job: JobSpec) -> bool:
    """Whether the job left the campaign economics to the built-in defaults (as the CLI summary says)."""
    return "evaluation" not in job.model_fields_set or "economics" not in job.evaluation.model_fields_set


def model_uri(facts: CardFacts, version: str) -> str:
    return f"models:/{facts.job.tracking.registered_model}/{version}"


def _purpose(f: CardFacts) -> list[Block]:
    t = f.job.table
    return [
        f"Scores each customer with the probability that they churn "
        f"(label `{t.label}` = `{t.positive}`), so that a retention team contacts the customers whose probability "
        f"reaches the decision threshold ({f.threshold.value:.4f}): the model returns `probability` and `decision` "
        "(1 = contact) per row.",
        f"Inputs: {len(t.features)} columns ({len(t.numeric)} numeric, {len(t.categorical)} categorical), checked "
        "with the table's rules logged with the model (a row that breaks them is refused, never scored). "
        "Meant for customers drawn like the training rows; the score says how likely a customer is to leave, "
        "not why, nor whether an offer will keep them.",
    ]


def _data(f: CardFacts) -> list[Block]:
    m, r = f.manifest, f.rows
    share = m.rows_quarantined / m.rows_read if m.rows_read else 0.0
    labelled = r["train"] + r.get("validation", 0) + r["test"]
    rows = [["rows read", f"{m.rows_read:,}", ""],
            ["quarantined by the table's rules", f"{m.rows_quarantined:,}", _pct(share, 2)],
            ["duplicates removed", f"{m.duplicates_removed:,}", ""],
            ["kept (labelled)", f"{m.rows_kept:,}", ""],
            ["train split", f"{r['train']:,}", _pct(r["train"] / labelled)],
            ["validation split", f"{r.get('validation', 0):,}", _pct(r.get("validation", 0) / labelled)],
            ["test split", f"{r['test']:,}", _pct(r["test"] / labelled)],
            ["search sample (n of N train rows)", f"{r['search']:,} of {r['train']:,}", _pct(r["search"] / r["train"])],
            ["registered model fitted on", f"{r['final']:,}", f.registered_rows]]
    return [
        f"Source `{f.job.data.source}`, dataset `{m.dataset}` ({len(m.files)} file(s), staged {m.created}); "
        f"split with seed {f.job.seed}. The test split was held out of the search, the calibration and the "
        "choice of threshold.",
        Table(["rows", "count", "share / note"], rows, text=(0, 2)),
    ]


def _champion(f: CardFacts) -> list[Block]:
    c, scoring = f.champion, f.job.search.scoring
    rows = []
    for fam, res in sorted(f.families.items(), key=lambda kv: -c.family_scores.get(kv[0], kv[1].best_score)):
        rows.append([fam, _f(c.family_scores.get(fam)), f"{_f(res.best_score)} ± {_f(res.std_score)}",
                     str(res.n_candidates), str(res.n_fits), f"{res.rows_per_fit:,}", res.imbalance,
                     "yes" if fam in c.members else ""])
    if c.stack_score is not None:
        rows.append([STACK, _f(c.stack_score), f"± {_f(c.stack_std)}", "", "", "", "",
                     "yes" if c.name == STACK else ""])
    scores = dict(c.family_scores) | ({STACK: c.stack_score} if c.stack_score is not None else {})
    others = sorted(((v, k) for k, v in scores.items() if k != c.name), reverse=True)
    what = f"the stack of {', '.join(c.members)}" if c.name == STACK else c.name
    if others and others[0][0] > c.cv_score:  # a higher mean that did not clear the gain rule
        why = (f"mean CV {scoring} over {c.repeats} CV repeat(s) (the search's folds, then fresh ones): "
               f"{c.cv_score:.4f} ± {c.cv_std:.4f}; {others[0][1]} scored {others[0][0]:.4f}, higher, but not by a "
               f"clear gain (at least {MIN_GAIN} and one standard error of the fold-wise gains), so the simpler "
               "model was kept")
    else:
        gap = f"; the next best, {others[0][1]}, scored {others[0][0]:.4f}" if others else ""
        why = (f"the highest mean CV {scoring} over {c.repeats} CV repeat(s) "
               f"(the search's folds, then fresh ones): {c.cv_score:.4f} ± {c.cv_std:.4f}{gap}")
    out: list[Block] = [
        f"Champion: **{what}**, {why}.",
        Table(["family", f"CV {scoring} (all repeats)", "search best ± std", "candidates", "fits", "rows per fit",
               "imbalance", "in champion"], rows, text=(0, 6, 7)),
    ]
    params = [[fam, readable(k), str(v)] for fam in c.members for k, v in sorted(f.families[fam].best_params.items())]
    if params:
        out += ["The members' chosen parameters:", Table(["member", "parameter", "value"], params, text=(0, 1, 2))]
    ch = f.full_data
    if ch is not None:
        won = "the full-data xgboost model" if ch.winner == "full-data" else "the sample champion"
        out.append(f"The train split held more rows than the search sample, so xgboost was also trained on every "
                   f"train row and both were scored on the validation split; **{won}** is registered: {ch.line}.")
        trows = [[name, _f(ev.metrics["roc_auc"]), _f(ev.metrics["pr_auc"]), _f(ev.metrics["brier"])]
                 for name, ev in f.test_by_model.items()]
        trows = [[r[0], _f(ch.full_score if r[0].startswith("full") else ch.sample_score), *r[1:]] for r in trows]
        if trows:
            out += ["Both candidates on the test split (reported only; the choice was made on validation):",
                    Table(["model", f"validation {ch.scoring}", "test ROC AUC", "test PR AUC", "test Brier"], trows)]
    return out


def _metric_rows(f: CardFacts) -> list[list[str]]:
    m, iv = f.test.metrics, f.intervals
    rows = [
        ["ROC AUC", _f(m["roc_auc"]), _ci(iv["roc_auc"]), f"histogram, error bound {m['roc_auc_error_bound']:.1e}"],
        ["PR AUC (average precision)", _f(m["pr_auc"]), _ci(iv["pr_auc"]),
         f"histogram, error bound {m['pr_auc_error_bound']:.1e}"],
        ["Brier score", _f(m["brier"]), _ci(iv["brier"]), "exact"],
        ["log loss", _f(m["log_loss"]), _ci(iv["log_loss"]), "exact"],
    ]
    tn, fp, fn, tp = f.test.summary.confusion(f.threshold.value)
    rows += [
        ["precision at the threshold", _f(tp / (tp + fp)) if tp + fp else "—", _ci(iv["precision"]), "exact counts"],
        ["recall at the threshold", _f(tp / (tp + fn)) if tp + fn else "—", _ci(iv["recall"]), "exact counts"],
        ["contact rate at the threshold", _f(m["contacted_fraction"]), _ci(iv["contact_rate"]), "exact counts"],
    ]
    if "profit" in m:
        rows.append(["campaign profit on the test split", _money(m["profit"]),
                     f"[{_money(iv['profit'][0])}, {_money(iv['profit'][1])}]", "exact counts"])
    for k in f.job.evaluation.top_k:
        name = f"precision_at_{round(100 * k):g}pct"
        if name in m:
            rows.append([f"precision in the top {round(100 * k):g} %", _f(m[name]), "—",
                         f"histogram, error bound {m[name + '_error_bound']:.1e}"])
    return rows


def _test_metrics(f: CardFacts) -> list[Block]:
    s = f.test.summary
    of = ("the registered model (the full-data fit)" if f.registered_rows.startswith("every train row") else
          "the model before finalising (the registered one was refitted on train + test rows with the same settings)"
          if f.rows["final"] > f.rows["search"] else "the registered model")
    occupied = int(np.count_nonzero(s.pos + s.neg))
    grouping = (f"(the summary's {occupied:,} occupied bins drawn one by one)" if occupied <= GROUPS else
                f"in spread: the summary's {occupied:,} occupied bins are drawn as {GROUPS:,} runs of adjacent bins "
                "(ties within a run count half) and the interval is centred on the reported value")
    return [
        f"On the test split: {s.rows:,} rows, {s.positives:,} churners ({_pct(s.positive_rate())}); the figures are of "
        f"{of}. Each partition was scored and summarised on a worker and only the merged summary reached the driver.",
        Table(["metric", "value", f"{LEVEL:.0%} interval", "how"], _metric_rows(f), text=(0, 3)),
        f"Intervals: percentile intervals of {REPLICATES:,} Poisson bootstrap replicates (seed {f.job.seed}), drawn "
        "from the merged test summary without gathering or re-reading a row. Each row's bootstrap weight is an "
        "independent Poisson(1) draw, so a cell of the summary holding c rows (a score bin of one class, a cell of "
        "the confusion matrix) weighs Poisson(c), independently of the other cells (Hanley & MacGibbon 2006; "
        "Chamandy et al. 2012). For the figures at the threshold a replicate is exactly the row-level Poisson "
        f"bootstrap; for ROC AUC and PR AUC too {grouping}. Brier and log loss weigh each bin's rows at its mean "
        "probability, centred on the exact value. The intervals show the test sample's variation, not that of "
        "refitting the model.",
    ]


def _calibration(f: CardFacts) -> list[Block]:
    s, c = f.test.summary, f.champion
    observed, predicted, counts = s.calibration_curve()
    ch = f.full_data
    if ch is not None and ch.winner == "full-data":
        why = (f"the full-data model's own map, `{f.calibration}`, chosen on {ch.calibration_rows:,} validation rows "
               "(cross-fitted) as the lowest Brier score")
    else:
        tried = ", ".join(f"{k} {v:.4f}" for k, v in sorted(c.calibration.brier.items(), key=lambda kv: kv[1]))
        if len(c.calibration.brier) > 1:
            why = f"`{f.calibration}`, the lowest cross-fitted out-of-fold Brier score of the maps tried ({tried})"
        elif len(c.members) > 1:
            why = f"`{f.calibration}`, the stack's own combiner (out-of-fold Brier {tried})"
        else:
            why = f"`{f.calibration}`, as the job sets it (out-of-fold Brier {tried})"
    raw = (f" Before the map, the best member's own probabilities score {f.raw_brier:.4f}."
           if f.raw_brier is not None else "")
    return [
        f"Method: {why}. Test Brier score {s.brier():.4f} {_ci(f.intervals['brier'])}.{raw}",
        Figure(f.calibration_png, "calibration.png", "Reliability curve on the test split: 10 quantile groups of rows "
               "(the diagonal is perfect calibration)."),
        Table(["group", "mean predicted", "observed churn rate", "rows"],
              [[str(i), _f(p), _f(o), f"{int(n):,}"]
               for i, (o, p, n) in enumerate(zip(observed, predicted, counts, strict=True), 1)]),
    ]


def _threshold(f: CardFacts) -> list[Block]:
    e, t, m = f.job.evaluation.economics, f.threshold, f.test.metrics
    churner, stayer = contact_profit(np.array([1, 0]), e)
    breakeven = -stayer / (churner - stayer) if churner > stayer else float("nan")
    tn, fp, fn, tp = f.test.summary.confusion(t.value)
    default = " These are the built-in defaults: the job did not set `evaluation.economics`." \
        if _default_economics(f.job) else ""
    out: list[Block] = [
        f"Decision threshold **{t.value:.4f}**, the probability that maximises the campaign's profit on {t.source} "
        f"(the F1-maximising threshold there is {t.f1:.4f}). Contact everyone whose churn probability reaches it.",
        Table(["campaign economics", "value"], [
            ["customer value kept when a churner stays", _money(e.customer_value)],
            ["offer cost (paid when accepted)", _money(e.offer_cost)],
            ["contact cost", _money(e.contact_cost)],
            ["acceptance rate", _pct(e.acceptance_rate)],
            ["expected gain of contacting a churner", _money(float(churner))],
            ["expected loss of contacting a stayer", _money(float(stayer))],
            ["break-even churn probability", _f(breakeven)]]),
        f"A contact pays when the churn probability exceeds {_f(breakeven)}; with calibrated probabilities the "
        f"profit-maximising threshold lies near it.{default}",
    ]
    if "profit" in m:
        low, high = f.intervals["profit"]
        out.append(f"On the test split the threshold contacts {tp + fp:,} of {f.test.summary.rows:,} customers "
                   f"({_pct(m['contacted_fraction'])}), reaching {tp:,} of {tp + fn:,} churners; profit "
                   f"{_money(m['profit'])} [{_money(low)}, {_money(high)}], "
                   f"against {_money(m['profit_contact_all'])} for contacting everyone and 0 for contacting nobody.")
    return out


def _segments(f: CardFacts) -> list[Block]:
    shown = [s for s in f.segments if s.shown]
    rows = [[s.column, s.level, f"{s.rows:,}", _pct(s.churn_rate), _f(s.roc_auc), _ci(s.roc_auc_interval),
             _pct(s.contact_rate), _f(s.precision)] for s in shown]
    out: list[Block] = [
        f"ROC AUC and contact rate at the threshold for each level of each categorical column with at least "
        f"{MIN_SEGMENT_ROWS} test rows and {MIN_SEGMENT_CLASS} of each class; each partition summarised by level on "
        f"a worker ({f.test.summary.rows:,} test rows, the model of the test metrics). Intervals: {SEGMENT_REPLICATES} "
        "Poisson bootstrap replicates of each level's summary.",
        Table(["column", "level", "rows", "churn rate", "ROC AUC", f"{LEVEL:.0%} interval", "contact rate",
               "precision"], rows, text=(0, 1)) if rows else
        "No level has enough test rows." if f.job.table.categorical else "The table has no categorical column.",
    ]
    hidden = [s for s in f.segments if not s.shown]
    if hidden:
        out.append("Not shown (too few rows or too few of a class): "
                   + ", ".join(f"{s.column} = {s.level} ({s.rows:,} rows, {s.positives:,} churners)" for s in hidden)
                   + ".")
    return out


def _limits(f: CardFacts) -> list[Block]:
    m, r = f.manifest, f.rows
    share = m.rows_quarantined / m.rows_read if m.rows_read else 0.0
    reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(m.quarantined_by_reason.items(), key=lambda kv: -kv[1])[:5])
    items = [f"Quarantined share: {m.rows_quarantined:,} of {m.rows_read:,} rows read ({_pct(share, 2)})"
             + (f": {reasons}" if reasons else "") + ". Customers like them are refused when scored, not scored."]
    if "search" not in f.notes:  # else its note below says it, with the setting
        items.append(f"Sampled rows: none; the search saw every one of the {r['train']:,} train rows.")
    for key, note in f.notes.items():
        label = {"search": "Search sample", "finalize": "Finalize", "full-data": "Full-data fit",
                 "validation": "Validation split"}.get(key, f"Capped family {key}")
        items.append(f"{label}: {note}.")
    capped = [k for k in f.notes if k in f.families]
    if not capped:
        items.append("Capped families: none (every family's fits saw every search row).")
    items.append(f"ROC AUC and PR AUC are read from a {f.test.summary.bins:,}-bin histogram of the scores: at most "
                 f"{f.test.metrics['roc_auc_error_bound']:.1e} and {f.test.metrics['pr_auc_error_bound']:.1e} from the "
                 f"exact values; segment AUCs from {SEGMENT_BINS:,} bins (bounds in card.json).")
    if f.too_many_levels:
        items.append("No segments for columns with too many levels: " + ", ".join(f.too_many_levels) + ".")
    items.append("The intervals cover the test sample's variation only; the segment table is descriptive (many "
                 "levels are compared at once).")
    return [Bullets(items)]


def _usage(f: CardFacts, version: str) -> list[Block]:
    uri, store = model_uri(f, version), f.tracking_uri
    record = json.loads(f.example.to_json(orient="records"))
    body = json.dumps({"dataframe_records": record})
    return [
        f"Model URI `{uri}` (tracking store `{store}`). Check the version's files against the digests recorded at "
        "registration, score a batch on the cluster, or serve it over HTTP:",
        Code(f"churn verify {uri} --tracking-uri {store} --into ./checked-model\n"
             f"churn score jobs/score.yaml --set model_uri={uri} --set tracking.uri={store} "
             "--set data.source='<CSV files to score>'\n"
             f"churn serve -m {uri} --tracking-uri {store}\n"
             "curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\\n"
             f"  -d '{body}'"),
        "In Python (the model loads where neither churn nor dask is installed):",
        Code(f'import mlflow\nmlflow.set_tracking_uri("{store}")\nmodel = mlflow.pyfunc.load_model("{uri}")\n'
             "scores = model.predict(rows)  # rows: a DataFrame of the feature columns -> probability, decision"),
    ]


def sections(f: CardFacts, version: str) -> list[tuple[str, str, list[Block]]]:
    """The card's sections: (id, title, blocks), in :data:`SECTIONS` order."""
    blocks = {"purpose": _purpose(f), "data": _data(f), "champion": _champion(f), "test-metrics": _test_metrics(f),
              "calibration": _calibration(f), "threshold": _threshold(f), "segments": _segments(f),
              "limits": _limits(f), "usage": _usage(f, version)}
    return [(key, title, blocks[key]) for key, title in SECTIONS]


def _title(f: CardFacts, version: str) -> tuple[str, str]:
    name = f.job.tracking.registered_model
    return (f"Model card: {name} version {version}",
            f"Job {f.job.name}, run {f.run_id}, dataset {f.manifest.dataset}; written "
            f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.")


# -- rendering ------------------------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(f: CardFacts, version: str) -> str:
    """The card as Markdown (the picture as ``calibration.png`` beside it)."""
    title, meta = _title(f, version)
    out = [f"# {title}", "", meta, ""]
    for i, (_, head, blocks) in enumerate(sections(f, version), 1):
        out += [f"## {i}. {head}", ""]
        for b in blocks:
            if isinstance(b, Table):
                out.append("| " + " | ".join(_md_cell(h) for h in b.head) + " |")
                out.append("|" + "|".join(":---" if j in b.text else "---:" for j in range(len(b.head))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            elif isinstance(b, Code):
                out += ["```bash" if not b.text.startswith("import") else "```python", b.text, "```"]
            elif isinstance(b, Figure):
                out.append(f"![{b.caption}]({b.name})")
            elif isinstance(b, Bullets):
                out += [f"- {item}" for item in b.items]
            else:
                out.append(b)
            out.append("")
    return "\n".join(out)


_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline(text: str) -> str:
    """A paragraph's text as HTML: escaped, with its Markdown **bold** and `code` spans."""
    out = html.escape(text)
    out = _BOLD.sub(r"<strong>\1</strong>", out)
    return _CODE.sub(r"<code>\1</code>", out)


def to_html(f: CardFacts, version: str) -> str:
    """The card as one self-contained HTML page (the picture inlined as PNG)."""
    title, meta = _title(f, version)
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p class='meta'>{html.escape(meta)}</p>", "<nav>"]
    parts += [f"<a href='#{key}'>{i}. {html.escape(head)}</a>" for i, (key, head) in enumerate(SECTIONS, 1)]
    parts.append("</nav>")
    for i, (key, head, blocks) in enumerate(sections(f, version), 1):
        parts.append(f"<section id='{key}'><h2>{i}. {html.escape(head)}</h2>")
        for b in blocks:
            if isinstance(b, Table):
                def cls(j: int, text: tuple[int, ...] = b.text) -> str:
                    return " class='text'" if j in text else ""
                parts.append("<table><tr>" + "".join(f"<th{cls(j)}>{html.escape(h)}</th>" for j, h in enumerate(b.head))
                             + "</tr>")
                parts += ["<tr>" + "".join(f"<td{cls(j)}>{_inline(c)}</td>" for j, c in enumerate(row)) + "</tr>"
                          for row in b.rows]
                parts.append("</table>")
            elif isinstance(b, Code):
                parts.append(f"<pre>{html.escape(b.text)}</pre>")
            elif isinstance(b, Figure):
                data = base64.b64encode(b.png).decode()
                parts.append(f"<figure><img alt='{html.escape(b.caption)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
            elif isinstance(b, Bullets):
                parts.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in b.items) + "</ul>")
            else:
                parts.append(f"<p>{_inline(b)}</p>")
        parts.append("</section>")
    return Template(TEMPLATE.read_text()).substitute(title=html.escape(title), body="\n".join(parts))


def figures(f: CardFacts, version: str) -> dict[str, Any]:
    """The card's figures as JSON (``card.json``): what the tables show, unrounded."""
    return {
        "model_uri": model_uri(f, version), "run_id": f.run_id, "dataset": f.manifest.dataset,
        "rows": dict(f.rows), "rows_read": f.manifest.rows_read, "rows_quarantined": f.manifest.rows_quarantined,
        "champion": f.champion.name, "members": list(f.champion.members), "cv_score": f.champion.cv_score,
        "family_scores": dict(f.champion.family_scores), "stack_score": f.champion.stack_score,
        "calibration": f.calibration, "threshold": f.threshold.value, "threshold_source": f.threshold.source,
        "economics": f.job.evaluation.economics.model_dump(),
        "test": {k: float(v) for k, v in f.test.metrics.items()},
        "intervals": {k: list(v) for k, v in f.intervals.items()}, "bootstrap_replicates": REPLICATES,
        "segments": [asdict(s) | {"contact_rate": s.contact_rate} for s in f.segments],
        "segment_columns_with_too_many_levels": list(f.too_many_levels),
        "notes": dict(f.notes), "seconds": f.seconds,
    }


def card_link(f: CardFacts) -> str:
    """The Markdown line of the version's description that leads to the card."""
    path = f"{FOLDER}/card.html"
    return (f"Model card: [{path}](#/experiments/{f.experiment_id}/runs/{f.run_id}/artifactPath/{path}) "
            f"(runs:/{f.run_id}/{path}; Markdown beside it: card.md).")


def log_card(f: CardFacts, version: str) -> dict[str, str]:
    """Render the card for ``version`` and log it to the open run (``model_card/``): card.html,
    card.md, card.json and calibration.png; the intervals as run metrics (``test_<metric>_ci_low``
    and ``_ci_high``), and what the card took, gathering included (``model_card_seconds``).
    Returns the version tags that point at it."""
    started = time.perf_counter()
    mlflow.log_text(to_html(f, version), f"{FOLDER}/card.html")
    mlflow.log_text(to_markdown(f, version), f"{FOLDER}/card.md")
    mlflow.log_dict(figures(f, version), f"{FOLDER}/card.json")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "calibration.png"
        path.write_bytes(f.calibration_png)
        mlflow.log_artifact(str(path), FOLDER)
    bounds = {f"test_{k}_ci_{side}": v for k, iv in f.intervals.items()
              for side, v in zip(("low", "high"), iv, strict=True) if np.isfinite(v)}
    mlflow.log_metrics(bounds | {"model_card_seconds": f.seconds + time.perf_counter() - started})
    return {"model_card": f"runs:/{f.run_id}/{FOLDER}/card.html"}
