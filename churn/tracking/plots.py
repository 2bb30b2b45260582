"""Evaluation pictures (matplotlib, no screen needed). Each function returns a Figure.

The curves are scikit-learn's ``*Display`` objects, given the points a score summary holds (no
row's score is needed: :mod:`churn.modeling.summary`); lift/gains, importance and the family box
plot have no Display in scikit-learn, so they are drawn here.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import CalibrationDisplay  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)

from churn.modeling.summary import ScoreSummary  # noqa: E402


def _fig(title: str) -> tuple[Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def roc(summary: ScoreSummary) -> Figure:
    """ROC curve of the test split, drawn from its score summary (a point per non-empty bin)."""
    fpr, tpr = summary.roc_curve()
    auc, bound = summary.roc_auc()
    fig, ax = _fig("ROC curve (test split)")
    RocCurveDisplay(fpr=fpr, tpr=tpr, roc_auc=auc, name=f"model (± {bound:.0e})").plot(
        ax=ax, plot_chance_level=True)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.legend(loc="lower right")
    return fig


def pr(summary: ScoreSummary) -> Figure:
    """Precision-recall curve of the test split, drawn from its score summary."""
    precision, recall = summary.pr_curve()
    ap, bound = summary.average_precision()
    fig, ax = _fig("Precision-recall curve (test split)")
    PrecisionRecallDisplay(precision, recall, average_precision=ap, name=f"model (± {bound:.0e})",
                           prevalence_pos_label=summary.positive_rate()).plot(ax=ax, plot_chance_level=True)
    ax.set_xlabel("recall (share of churners reached)")
    ax.set_ylabel("precision (share of contacts who churn)")
    ax.legend(loc="lower left")
    return fig


def _reliability(ax: plt.Axes, summary: ScoreSummary, name: str, color: str) -> None:
    prob_true, prob_pred, _ = summary.calibration_curve(10)
    CalibrationDisplay(prob_true, prob_pred, None).plot(ax=ax, name=name, color=color)


def calibration(summary: ScoreSummary, raw: ScoreSummary | None = None, method: str = "") -> Figure:
    """Reliability curve of the registered model's probabilities on the test split (10 quantile
    groups of rows, from the score summary), and of the uncalibrated probabilities beside it when
    their summary is given."""
    brier = summary.brier()
    fig, ax = _fig(f"Calibration, test split (Brier {brier:.3f})")
    if raw is not None:
        _reliability(ax, raw, f"before calibration (Brier {raw.brier():.3f})", "tab:grey")
    _reliability(ax, summary, f"registered, {method or 'calibrated'} (Brier {brier:.3f})", "tab:blue")
    ax.set_xlabel("mean predicted churn probability")
    ax.set_ylabel("observed churn rate")
    ax.legend(loc="upper left")
    return fig


def lift_gains(lift: pd.DataFrame) -> Figure:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110)
    a1.bar(lift["decile"], lift["lift"], color="tab:blue")
    a1.axhline(1, ls="--", color="grey")
    a1.set_title("Lift by score decile")
    a1.set_xlabel("decile (1 = highest scores)")
    a1.set_ylabel("lift over base rate")
    frac = np.r_[0, lift["rows"].cumsum() / lift["rows"].sum()]
    a2.plot(frac, np.r_[0, lift["cumulative_gain"]], "o-", lw=2, label="model")
    a2.plot([0, 1], [0, 1], "--", color="grey", label="random")
    a2.set_title("Cumulative gains")
    a2.set_xlabel("share of customers contacted")
    a2.set_ylabel("share of churners reached")
    a2.legend(loc="lower right")
    for ax in (a1, a2):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def confusion(matrix: list[list[int]], threshold: float) -> Figure:
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=110)
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=["stay", "churn"]).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=",")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"Confusion matrix at threshold {threshold:.3f}")
    fig.tight_layout()
    return fig


def importance(names: list[str], means: np.ndarray, stds: np.ndarray, top: int = 15) -> Figure:
    order = np.argsort(means)[::-1][:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.2), dpi=110)
    ax.barh([names[i] for i in order], means[order], xerr=stds[order], color="tab:green")
    ax.set_xlabel("drop in ROC AUC when the column is shuffled")
    ax.set_title("Permutation feature importance (test split)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig


def family_scores(scores: dict[str, np.ndarray], metric: str) -> Figure:
    """Box plot of every candidate's mean CV score, per family."""
    names = list(scores)
    fig, ax = _fig(f"CV {metric} by model family (all candidates)")
    ax.boxplot([scores[n] for n in names], showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
    ax.set_ylabel(f"mean CV {metric}")
    fig.tight_layout()
    return fig


def flow_chart(ranks: list[list[list[str]]], title: str) -> Figure:
    """Boxes in ranks from top to bottom (each box: label lines), every box joined to every box
    of the next rank: the stage graph of a job. (No graph-drawing library needed for a layered
    chart this simple; Mermaid text of the same graph is logged beside it.)

    The vertical axis is in inches, so each rank is as tall as its tallest box and every arrow
    runs from the bottom edge of one box to the top edge of the next.
    """
    line, pad, gap, title_h = 8 * 1.2 / 72, 0.12, 0.45, 0.5  # inches: 8-pt lines, box padding, between ranks
    halves = [max(len(label) for label in rank) * line / 2 + pad for rank in ranks]
    centres_y, y = [], gap / 2
    for half in halves:
        centres_y.append(y + half)
        y += 2 * half + gap
    width = max(len(r) for r in ranks)
    fig = plt.figure(figsize=(max(6.0, 2.3 * width), y + title_h), dpi=110)
    ax = fig.add_axes((0.0, 0.0, 1.0, y / (y + title_h)))
    ax.set_xlim(0, width)
    ax.set_ylim(y, 0)
    ax.axis("off")
    fig.suptitle(title, y=1 - 0.15 / (y + title_h), va="top")
    centres: list[list[tuple[float, float]]] = []
    for cy, rank in zip(centres_y, ranks, strict=True):
        xs = [(width - len(rank)) / 2 + i + 0.5 for i in range(len(rank))]
        centres.append([(x, cy) for x in xs])
        for x, label in zip(xs, rank, strict=True):
            ax.text(x, cy, "\n".join(label), ha="center", va="center", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.4", "facecolor": "#e8f0fe", "edgecolor": "#3b6fb6"})
    for r in range(len(ranks) - 1):
        for x0, y0 in centres[r]:
            for x1, y1 in centres[r + 1]:
                h0, h1 = halves[r], halves[r + 1]
                ax.annotate("", xy=(x1, y1 - h1 - 0.03), xytext=(x0, y0 + h0 + 0.03),
                            arrowprops={"arrowstyle": "->", "color": "#555555", "lw": 0.8})
    return fig
