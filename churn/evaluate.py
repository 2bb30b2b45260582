"""Evaluation on held-out rows: probability-based metrics, report, lift by decile."""

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

from churn.validate import LABEL_COLUMN


@dataclass
class Evaluation:
    """Metrics of one model on one set of rows."""

    metrics: dict[str, float]
    report: str
    confusion: list[list[int]]
    lift: pd.DataFrame
    y_true: np.ndarray = field(repr=False)
    y_score: np.ndarray = field(repr=False)


def _score_partition(frame: pd.DataFrame, model: Any, features: list[str]) -> pd.DataFrame:
    if len(frame) == 0:
        return pd.DataFrame({"y": np.zeros(0, np.int8), "p": np.zeros(0)})
    return pd.DataFrame({"y": frame[LABEL_COLUMN].to_numpy(np.int8),
                         "p": model.predict_proba(frame[features])[:, 1]})


def score_on_cluster(ddf: Any, model: Any, features: list[str], client: Client) -> tuple[np.ndarray, np.ndarray]:
    """``predict_proba`` over every partition on the workers; returns (labels, scores)."""
    [model_future] = client.scatter([model], broadcast=True, hash=False)
    parts = ddf.to_delayed()
    futures = [client.submit(_score_partition, f, model_future, features, pure=False)
               for f in client.compute(parts)]
    scored = [s for s in client.gather(futures) if len(s)]
    if not scored:
        return np.zeros(0, np.int8), np.zeros(0)
    both = pd.concat(scored, ignore_index=True)
    return both["y"].to_numpy(), both["p"].to_numpy()


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


def evaluate(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> Evaluation:
    """Probability metrics plus the classification report at ``threshold``."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "positive_rate": float(y.mean()),
        "rows": float(len(y)),
        "threshold": float(threshold),
    }
    report = classification_report(y, pred, target_names=["stay", "churn"], digits=4, zero_division=0)
    confusion = confusion_matrix(y, pred, labels=[0, 1]).tolist()
    return Evaluation(metrics, report, confusion, lift_table(y, p), y, p)

