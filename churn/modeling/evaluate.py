"""Evaluation: the decision threshold (chosen on out-of-fold predictions), probability-based
metrics on held-out rows, the classification report, lift by decile.

The held-out metrics come from a :class:`~churn.modeling.summary.ScoreSummary` (fixed size,
built and merged on the cluster): :func:`evaluation_from`. :func:`evaluate` summarises rows held
in memory first. ``lift_table`` and ``precision_at_top`` are the exact in-memory versions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client

from churn.clusters.info import workers as cluster_workers
from churn.clusters.scatter import scatter
from churn.config import EconomicsSpec
from churn.data.columns import LABEL_COLUMN
from churn.modeling.summary import ScoreSummary

THRESHOLD_SOURCE = "out-of-fold CV predictions"


@dataclass
class Evaluation:
    """Metrics of one model on one set of rows, and the summary of its scores they came from
    (a fixed size, whatever the rows: the plots draw their curves from it)."""

    metrics: dict[str, float]
    report: str
    confusion: list[list[int]]
    lift: pd.DataFrame
    summary: ScoreSummary | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Threshold:
    """The decision threshold, the F1 threshold beside it, and the rows they were chosen on."""

    value: float
    f1: float
    source: str


def choose_threshold(y_oof: np.ndarray, p_oof: np.ndarray | None, economics: EconomicsSpec) -> Threshold:
    """Profit-maximising and F1 thresholds from the champion's out-of-fold CV predictions.

    Never from the test split: its rows are only for the final report.
    """
    if p_oof is None or np.isnan(p_oof).any():
        raise ValueError("the champion has no out-of-fold predictions to choose a threshold on")
    value, _ = profit_threshold(y_oof, p_oof, economics)
    return Threshold(value, f1_threshold(y_oof, p_oof), THRESHOLD_SOURCE)


def lift_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Churn rate, lift and cumulative gains per score decile (decile 1 = highest scores)."""
    order = np.argsort(-p, kind="stable")
    ys = y[order]
    groups = np.array_split(np.arange(len(ys)), bins)
    base = ys.mean() if len(ys) else 0.0
    total_pos = ys.sum()
    rows = []
    cum = 0
    for i, g in enumerate(groups, 1):
        pos = int(ys[g].sum())
        cum += pos
        rate = pos / len(g) if len(g) else 0.0
        rows.append({"decile": i, "rows": len(g), "positives": pos, "churn_rate": rate,
                     "lift": rate / base if base else 0.0,
                     "cumulative_gain": cum / total_pos if total_pos else 0.0})
    return pd.DataFrame(rows)


def precision_at_top(y: np.ndarray, p: np.ndarray, fraction: float) -> float:
    """Share of churners among the ``fraction`` of rows with the highest scores."""
    k = max(1, int(round(fraction * len(y))))
    order = np.argsort(-p, kind="stable")[:k]
    return float(np.asarray(y)[order].mean())


def contact_profit(y: np.ndarray, economics: EconomicsSpec) -> np.ndarray:
    """Expected profit of contacting each customer, given whether they would churn.

    A contacted churner accepts the offer with the acceptance rate and stays: value minus
    offer. A contacted non-churner who accepts only costs the offer. Every contact costs.
    """
    e = economics
    gain_churner = e.acceptance_rate * (e.customer_value - e.offer_cost) - e.contact_cost
    loss_stayer = -e.acceptance_rate * e.offer_cost - e.contact_cost
    return np.where(np.asarray(y) == 1, gain_churner, loss_stayer)


def profit_threshold(y: np.ndarray, p: np.ndarray, economics: EconomicsSpec) -> tuple[float, float]:
    """The score threshold that maximises total campaign profit on (y, p), and that profit.

    Contacting everyone with score >= t; ties in score are contacted together. If no
    threshold gives a profit, nobody is contacted (threshold just above the top score).
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    ps, gain = p[order], contact_profit(y[order], economics)
    cum = np.cumsum(gain)
    last_of_tie = np.r_[ps[1:] != ps[:-1], True]  # can only cut between distinct scores
    cand = np.flatnonzero(last_of_tie)
    if not len(cand) or cum[cand].max() <= 0:
        return float(np.nextafter(ps[0], np.inf)) if len(ps) else 0.5, 0.0
    best = cand[int(np.argmax(cum[cand]))]
    return float(ps[best]), float(cum[best])


def f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The score threshold with the highest F1 on (y, p)."""
    from sklearn.metrics import precision_recall_curve

    prec, rec, thr = precision_recall_curve(y, p)
    f1 = np.where(prec[:-1] + rec[:-1] > 0, 2 * prec[:-1] * rec[:-1] / np.maximum(prec[:-1] + rec[:-1], 1e-12), 0)
    return float(thr[int(np.argmax(f1))]) if len(thr) else 0.5


def classification_text(tn: int, fp: int, fn: int, tp: int, digits: int = 4) -> str:
    """scikit-learn's ``classification_report`` (classes stay and churn) from the confusion counts, with
    whole-number support (its report of weighted rows prints ``7.0``)."""
    from sklearn.metrics import classification_report

    y, pred = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    weights = np.array([tn, fp, fn, tp])
    keep = weights > 0
    report = classification_report(y[keep], pred[keep], sample_weight=weights[keep], labels=[0, 1],
                                   target_names=["stay", "churn"], digits=digits, zero_division=0,
                                   output_dict=True)
    width = max(len("weighted avg"), digits)
    head = ["precision", "recall", "f1-score", "support"]
    lines = [" " * width + " " + "".join(f"{h:>10}" for h in head), ""]

    def row(name: str, r: dict[str, float]) -> str:
        return (f"{name:>{width}} " + "".join(f"{r[k]:>10.{digits}f}" for k in head[:3])
                + f"{round(r['support']):>10}")
    lines += [row(name, report[name]) for name in ("stay", "churn")] + [""]
    total = round(report["macro avg"]["support"])
    lines.append(f"{'accuracy':>{width}} " + " " * 20 + f"{report['accuracy']:>10.{digits}f}{total:>10}")
    lines += [row(name, report[name]) for name in ("macro avg", "weighted avg")]
    return "\n".join(lines) + "\n"


def evaluation_from(summary: ScoreSummary, threshold: float = 0.5, *, economics: EconomicsSpec | None = None,
                    top_k: list[float] | tuple[float, ...] = (0.05, 0.1, 0.2), f1_cut: float | None = None
                    ) -> Evaluation:
    """Probability metrics, lift, precision at top k, profit, and the report at ``threshold`` from
    a score summary (``threshold`` and ``f1_cut`` must be among its thresholds).

    Brier, log loss, the counts, profit, F1 and the report are exact; ROC AUC, PR AUC, precision
    at top k and the lift come from the histogram, and each ``<metric>_error_bound`` says how far
    the value can be from the exact one (:mod:`churn.modeling.summary`).
    """
    roc, roc_err = summary.roc_auc()
    ap, ap_err = summary.average_precision()
    tn, fp, fn, tp = summary.confusion(threshold)
    rows = summary.rows
    metrics = {
        "roc_auc": roc, "roc_auc_error_bound": roc_err,
        "pr_auc": ap, "pr_auc_error_bound": ap_err,
        "brier": summary.brier(),
        "log_loss": summary.log_loss(),
        "positive_rate": summary.positive_rate(),
        "rows": float(rows),
        "threshold": float(threshold),
        "contacted_fraction": (tp + fp) / rows,
    }
    for k in top_k:
        name = f"precision_at_{round(100 * k):g}pct"
        metrics[name], metrics[f"{name}_error_bound"] = summary.precision_at(k)
    if economics is not None:
        churner, stayer = contact_profit(np.array([1, 0]), economics)
        metrics["profit"] = float(tp * churner + fp * stayer)
        metrics["profit_contact_all"] = float(summary.positives * churner + summary.negatives * stayer)
    if f1_cut is not None:
        _, fp1, _, tp1 = summary.confusion(f1_cut)
        metrics["f1_threshold"] = float(f1_cut)
        metrics["f1_at_f1_threshold"] = float(2 * tp1 / max(1, tp1 + fp1 + summary.positives))
    lift = summary.lift()
    metrics["lift_error_bound"] = float((lift["churn_rate_error_bound"] / metrics["positive_rate"]).max())
    return Evaluation(metrics, classification_text(tn, fp, fn, tp), [[tn, fp], [fn, tp]], lift, summary)


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, *,
             economics: EconomicsSpec | None = None, top_k: list[float] | tuple[float, ...] = (0.05, 0.1, 0.2),
             f1_cut: float | None = None) -> Evaluation:
    """:func:`evaluation_from` the summary of rows held in memory (small data, tests)."""
    cuts = (threshold,) if f1_cut is None else (threshold, f1_cut)
    return evaluation_from(ScoreSummary.of(y, p, cuts), threshold, economics=economics, top_k=top_k, f1_cut=f1_cut)


def _permutation(model: Any, X: pd.DataFrame, y: pd.Series, repeats: int, seed: int) -> np.ndarray:
    from sklearn.inspection import permutation_importance

    return permutation_importance(model, X, y, scoring="roc_auc", n_repeats=repeats, random_state=seed,
                                  n_jobs=1).importances


def permutation_table(model: Any, rows: pd.DataFrame, features: list[str], seed: int, client: Client,
                      repeats: int = 4) -> pd.DataFrame | None:
    """Permutation importance (drop in ROC AUC over ``repeats`` shuffles) on ``rows``; None when the
    rows do not hold both classes.

    The repeats are split into one task per worker (each its own seeded stream) and their
    importances joined: the model and rows go to each worker once. Under joblib's dask backend
    scikit-learn ships the model with every feature's task, which measured slower on 2 workers
    (21 s) than one process (12.5 s) for a three-model stack.
    """
    if not len(rows) or rows[LABEL_COLUMN].nunique() != 2:
        return None
    X, y = rows[features], rows[LABEL_COLUMN].astype(int)
    workers = max(1, min(repeats, len(cluster_workers(client))))
    model_f, X_f, y_f = scatter(client, [model, X, y])
    shares = [len(part) for part in np.array_split(np.arange(repeats), workers)]
    parts = client.gather([client.submit(_permutation, model_f, X_f, y_f, n, seed + i, pure=False)
                           for i, n in enumerate(shares)])
    imp = np.concatenate(parts, axis=1)
    return pd.DataFrame({"feature": features, "mean": imp.mean(axis=1), "std": imp.std(axis=1)})
