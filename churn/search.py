"""Grid search with cross-validation, executed on the Dask cluster through joblib."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import joblib
import pandas as pd
from distributed import Client
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.model_selection import GridSearchCV, StratifiedKFold

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """The outcome of one grid search."""

    best_estimator: ImbPipeline
    best_params: dict[str, Any]
    best_score: float
    cv_results: pd.DataFrame
    seconds: float
    n_candidates: int


def folds(cv: int, seed: int) -> StratifiedKFold:
    """The CV splitter: stratified, shuffled with the job's seed (deterministic)."""
    return StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)


def grid_search(
    pipeline: ImbPipeline,
    grid: dict[str, list[Any]],
    X: pd.DataFrame,
    y: pd.Series,
    *,
    cv: int,
    scoring: str,
    seed: int,
    client: Client | None,
) -> SearchResult:
    """Fit ``GridSearchCV`` with every (candidate, fold) fit running on ``client``'s workers."""
    search = GridSearchCV(pipeline, grid, cv=folds(cv, seed), scoring=scoring, n_jobs=-1, refit=True,
                          error_score="raise")
    t0 = time.perf_counter()
    if client is not None:
        # X and y are scattered to the workers once and shared by every fit
        with joblib.parallel_backend("dask", client=client, scatter=[X, y]):
            search.fit(X, y)
    else:
        search.fit(X, y)
    seconds = time.perf_counter() - t0
    results = pd.DataFrame(search.cv_results_)
    results["params"] = results["params"].astype(str)
    log.info("search: %d candidates x %d folds in %.1fs; best %s %.4f", len(results), cv, seconds, scoring,
             search.best_score_)
    return SearchResult(search.best_estimator_, dict(search.best_params_), float(search.best_score_),
                        results, seconds, len(results))
