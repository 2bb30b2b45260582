"""Optional feature steps, kept or left out by cross-validation on the training rows before the search.

One step so far: :class:`~churn.modeling.features.GroupSums` (sums of numeric columns whose
names end in the same word). With ``model.feature_sums: auto`` a gradient-boosting pipeline is
cross-validated with and without the sums on the search's own folds; the sums join every
family's pipeline only when they raise the CV score by a clear margin (the rule a family must
meet to join the stack: :func:`churn.modeling.calibrate.clear_gain`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client

from churn.config import JobSpec
from churn.modeling.calibrate import clear_gain
from churn.modeling.pipeline import build_pipeline
from churn.modeling.search import RowsOnCluster, fold_scores_on_cluster, folds

log = logging.getLogger(__name__)

JUDGE = "hist_gradient_boosting"  # fast, and splits on one column at a time: it cannot build a sum itself


@dataclass
class SumsChoice:
    """The sums the search uses (empty: none), and the fold scores they were chosen on."""

    groups: dict[str, list[str]]
    mode: str  # auto, on or off
    without: np.ndarray = field(default_factory=lambda: np.zeros(0))
    with_sums: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def gain(self) -> float | None:
        return float((self.with_sums - self.without).mean()) if len(self.without) else None


def sums_in(families: dict[str, Any], job: JobSpec) -> SumsChoice:
    """The sums the searched pipelines hold (a reused search: the screen did not run again)."""
    steps = [r.best_estimator.named_steps.get("sums") for r in families.values()]
    groups = next((s.groups for s in steps if s is not None), None) or {}
    return SumsChoice(dict(groups), job.model.feature_sums_mode)


def choose_sums(job: JobSpec, X: pd.DataFrame, y: pd.Series, client: Client,
                rows: RowsOnCluster | None = None) -> SumsChoice:
    """The :class:`GroupSums` groups the search uses: all of them (``feature_sums: true``), none
    (``false``), or with ``auto`` all of them when cross-validation gains from them, else none."""
    groups, mode = job.sums_to_try(), job.model.feature_sums_mode
    if mode != "auto" or not groups:
        return SumsChoice(groups, mode)
    cv, scoring, schema, seed = job.search.cv, job.search.scoring, job.table, job.seed
    log.info("feature sums %s: %d-fold CV of %s with and without them", ", ".join(groups), cv, JUDGE)
    pipelines = {"without": build_pipeline(schema, JUDGE, "none", seed),
                 "with": build_pipeline(schema, JUDGE, "none", seed, sums=groups)}
    got = fold_scores_on_cluster(pipelines, X, y, cv=folds(cv, seed), scoring=scoring, client=client, rows=rows)
    scores = {name: res.scores for name, res in got.items()}
    choice = SumsChoice(groups if clear_gain(scores["with"], scores["without"]) else {}, mode,
                        scores["without"], scores["with"])
    log.info("feature sums: CV %s %.4f with, %.4f without (%s)",
             scoring, scores["with"].mean(), scores["without"].mean(), "kept" if choice.groups else "left out")
    return choice
