"""Evaluation pictures (matplotlib, no screen needed). Each function returns a Figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _fig(title: str) -> tuple[Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def roc(y: np.ndarray, p: np.ndarray, auc: float) -> Figure:
    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = _fig("ROC curve (test split)")
    ax.plot(fpr, tpr, lw=2, label=f"model (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (recall)")
    ax.legend(loc="lower right")
    return fig


def pr(y: np.ndarray, p: np.ndarray, ap: float) -> Figure:
    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = _fig("Precision-recall curve (test split)")
    ax.plot(rec, prec, lw=2, label=f"model (AP {ap:.3f})")
    ax.axhline(np.mean(y), ls="--", color="grey", label=f"base rate {np.mean(y):.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(loc="upper right")
    return fig


def calibration(y: np.ndarray, p: np.ndarray, brier: float) -> Figure:
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig, ax = _fig(f"Calibration (Brier {brier:.3f})")
    ax.plot(mean, frac, "o-", lw=2, label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
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
    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(4.6, 4), dpi=110)
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(j, i, f"{v:,}", ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    ax.set_xticks([0, 1], ["stay", "churn"])
    ax.set_yticks([0, 1], ["stay", "churn"])
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
