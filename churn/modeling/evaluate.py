"""Evaluation: the decision threshold (chosen on out-of-fold predictions), probability-based
metrics on held-out rows, the classification report, lift by decile."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    log_loss,
    roc_auc_score,
)

from churn.clusters.scatter import scatter
from churn.config import EconomicsSpec
from churn.data.columns import LABEL_COLUMN

THRESHOLD_SOURCE = "out-of-fold CV predictions"


@dataclass
class Evaluation:
    """Metrics of one model on one set of rows."""

    metrics: dict[str, float]
    report: str
    confusion: list[list[int]]
    lift: pd.DataFrame
    y_true: np.ndarray = field(repr=False)
    y_score: np.ndarray = field(repr=False)


def _score_partition(frame: pd.DataFrame, model: Any, features: list[str], members: bool) -> pd.DataFrame:
    """Labels and score columns of one partition: ``predict_proba``'s churn column, or with
    ``members`` each member's raw score (a :class:`ChurnClassifier`'s ``scores``)."""
    if len(frame) == 0:
        return pd.DataFrame({"y": np.zeros(0, np.int8)})
    X = frame[features]
    scores = model.scores(X) if members else model.predict_proba(X)[:, 1:]
    return pd.DataFrame({"y": frame[LABEL_COLUMN].to_numpy(np.int8),
                         **{f"s{j}": scores[:, j] for j in range(scores.shape[1])}})


def _scores_on_cluster(ddf: Any, model: Any, features: list[str], client: Client, members: bool
                       ) -> tuple[np.ndarray, np.ndarray]:
    [model_future] = scatter(client, [model], broadcast=True)
    # submit per partition: a Future handed to map_partitions is resolved in the driver and the
    # model embedded in every task again
    futures = [client.submit(_score_partition, part, model_future, features, members, pure=False)
               for part in client.compute(ddf.to_delayed())]
    scored = [s for s in client.gather(futures) if len(s)]
    if not scored:
        return np.zeros(0, np.int8), np.zeros((0, len(model.members) if members else 1))
    both = pd.concat(scored, ignore_index=True)
    return both["y"].to_numpy(np.int8), both.drop(columns="y").to_numpy(np.float64)


def score_on_cluster(ddf: Any, model: Any, features: list[str], client: Client) -> tuple[np.ndarray, np.ndarray]:
    """``predict_proba`` partition by partition on the workers; returns (labels, scores) in the driver.

    The model is scattered once to every worker and each partition task refers to it (measured:
    the model is serialized 2 times to score 20 partitions on 2 workers). dask-ml's
    ``ParallelPostFit`` embeds the estimator in every partition task instead (21 times for the
    same 20 partitions), and so does ``map_partitions`` handed a Future.
    """
    y, scores = _scores_on_cluster(ddf, model, features, client, members=False)
    return y, scores[:, 0]


def member_scores_on_cluster(ddf: Any, model: Any, features: list[str], client: Client
                             ) -> tuple[np.ndarray, np.ndarray]:
    """(labels, one raw-score column per member) of a ``ChurnClassifier``, in one pass over ``ddf``;
    ``model.calibrator.predict`` of the columns is its probability."""
    return _scores_on_cluster(ddf, model, features, client, members=True)


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


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float = 0.5, *,
             economics: EconomicsSpec | None = None, top_k: list[float] | tuple[float, ...] = (0.05, 0.1, 0.2),
             f1_cut: float | None = None) -> Evaluation:
    """Probability metrics, lift, precision at top k, profit, and the report at ``threshold``."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")  # sort once; lift and top-k then see presorted scores
    y_ranked, p_ranked = y[order], p[order]
    pred = (p >= threshold).astype(int)
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
        "threshold": float(threshold),
        "contacted_fraction": float(pred.mean()),
    }
    for k in top_k:
        metrics[f"precision_at_{round(100 * k):g}pct"] = precision_at_top(y_ranked, p_ranked, k)
    if economics is not None:
        gain = contact_profit(y, economics)
        metrics["profit"] = float(gain[pred == 1].sum())
        metrics["profit_contact_all"] = float(gain.sum())
    if f1_cut is not None:
        metrics["f1_threshold"] = float(f1_cut)
        f1_pred = (p >= f1_cut).astype(int)
        tp = int(((f1_pred == 1) & (y == 1)).sum())
        metrics["f1_at_f1_threshold"] = float(2 * tp / max(1, f1_pred.sum() + y.sum()))
    report = classification_report(y, pred, target_names=["stay", "churn"], digits=4, zero_division=0)
    confusion = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    return Evaluation(metrics, report, confusion, lift_table(y_ranked, p_ranked), y, p)



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
    workers = max(1, min(repeats, len(client.scheduler_info()["workers"])))
    model_f, X_f, y_f = scatter(client, [model, X, y])
    shares = [len(part) for part in np.array_split(np.arange(repeats), workers)]
    parts = client.gather([client.submit(_permutation, model_f, X_f, y_f, n, seed + i, pure=False)
                           for i, n in enumerate(shares)])
    imp = np.concatenate(parts, axis=1)
    return pd.DataFrame({"feature": features, "mean": imp.mean(axis=1), "std": imp.std(axis=1)})
