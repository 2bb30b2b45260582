"""Checks on the model side that run before the expensive work.

* :func:`check_grids` — before any cluster starts: the scoring name (one a score summary can
  give, :func:`churn.modeling.summary.check_scoring`), every grid key, and every
  grid point against the estimators' own parameter constraints (scikit-learn validates its
  parameters itself; this asks it without fitting).
* :func:`check_round_trip` — before the search: a tiny fit of each family whose inference
  pipeline must survive the skops dump-and-load that registering and serving do, so a type
  outside the trusted list fails in seconds, not after the search.
* :func:`round_trip_once` — :func:`check_round_trip` unless it passed before for the same key
  (data, spec and code: the search cache's key), remembered by an empty file under
  ``<data.output>/preflight-cache/``.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import BaseEstimator
from sklearn.metrics import get_scorer_names
from sklearn.model_selection import ParameterGrid

from churn.config import ConfigError, JobSpec
from churn.config.errors import cut, shown
from churn.config.families import PIPELINE_KEYS, spelled
from churn.modeling.compat import scorer_response_method, validate_params
from churn.modeling.pipeline import build_pipeline, fresh, grid_for, imbalance_of, inference_pipeline
from churn.modeling.summary import check_scoring
from churn.serving.calibration import ChurnClassifier, ScoreCalibrator, member_scores
from churn.serving.trusted import UntrustedModelError, dump_pipeline


class RoundTripError(RuntimeError):
    """A fitted pipeline would not survive saving and loading as the registered model."""


def family_grids(job: JobSpec) -> dict[str, tuple[ImbPipeline, list[dict[str, list[Any]]]]]:
    """Each family's pipeline and its full grid (model grid, selection grid, imbalance treatments)."""
    sums = job.sums_to_try()
    return {fam: (build_pipeline(job.table, fam, job.model.imbalance, job.seed, job.model.row_cap(fam), sums),
                  grid_for(fam, job.model.grids.get(fam), job.model.selection, job.model.imbalance))
            for fam in job.model.families}


def check_grids(job: JobSpec) -> None:
    """Refuse, with one message naming the key and value, any grid point an estimator rejects."""
    if job.search.scoring not in get_scorer_names():
        raise ConfigError(f"search.scoring: unknown scoring {job.search.scoring!r}")
    try:  # the test metrics and the promotion gate read it from per-partition score summaries
        check_scoring(job.search.scoring)
    except ValueError as exc:
        raise ConfigError(f"search.scoring: {exc}") from None
    needs = scorer_response_method(job.search.scoring)
    for fam, (pipeline, grid) in family_grids(job).items():
        if needs == "predict_proba" and not hasattr(pipeline, "predict_proba"):
            raise ConfigError(f"search.scoring: {job.search.scoring} needs probabilities, but {fam} scores with a "
                              "decision function (its probabilities come from the calibration map after the "
                              "search); use roc_auc or average_precision, or leave the family out")
        valid = pipeline.get_params()
        for key in {k for part in grid for k in part}:
            if key not in valid:
                given = spelled(key) if key in PIPELINE_KEYS.values() else key.split("__")[-1]
                raise ConfigError(f"model.grids.{fam}: {fam} has no parameter {given!r}")
        for point in ParameterGrid(grid):
            candidate = fresh(pipeline, point)
            for est in [candidate, *candidate.get_params().values()]:
                if isinstance(est, BaseEstimator) and hasattr(est, "_parameter_constraints"):
                    try:
                        validate_params(est)
                    except (ValueError, TypeError) as exc:  # sklearn's InvalidParameterError is both
                        treatment = {"resample__method", "model__class_weight"} - set(job.model.grids.get(fam) or {})
                        said = ", ".join(f"{spelled(k)}={shown(v)}" for k, v in point.items() if k not in treatment)
                        said += f"; imbalance {imbalance_of(point, fam, job.model.imbalance)}"
                        raise ConfigError(f"model.grids.{fam}: grid point ({said}) is refused by "
                                          f"{type(est).__name__}: {cut(str(exc))}") from None


def covering_points(grid: dict[str, list[Any]] | list[dict[str, list[Any]]]) -> list[dict[str, Any]]:
    """A few grid points that use every value of every key, and every partial grid, at least once.

    Keys that all partial grids share are cycled together with the settings only some have
    (the imbalance treatments), so a list of grids costs as many points as its widest key.
    """
    parts = [grid] if isinstance(grid, dict) else grid
    shared = {k: v for k, v in parts[0].items() if all(part.get(k) == v for part in parts)}
    own: list[dict[str, Any]] = []
    for part in parts:
        rest = {k: v for k, v in part.items() if k not in shared}
        width = max((len(v) for v in rest.values()), default=1)
        own += [{k: v[i % len(v)] for k, v in rest.items()} for i in range(width)]
    width = max([len(own), *(len(v) for v in shared.values())])
    return [{**{k: v[i % len(v)] for k, v in shared.items()}, **own[i % len(own)]} for i in range(width)]


def tiny_sample(X: pd.DataFrame, y: pd.Series, rows: int) -> tuple[pd.DataFrame, pd.Series]:
    """About ``rows`` rows, at least 20 of each class where there are (SMOTE needs neighbours)."""
    y = pd.Series(np.asarray(y).astype(int), index=X.index)
    keep = []
    for c in (0, 1):
        idx = np.flatnonzero(y.to_numpy() == c)
        keep.append(idx[:max(20, int(rows * len(idx) / max(len(y), 1)))])
    picked = np.sort(np.concatenate(keep))
    return X.iloc[picked], y.iloc[picked]


def registered_form(pipeline: Any, X: pd.DataFrame, y: pd.Series, name: str) -> ChurnClassifier:
    """``pipeline`` wrapped as the registered model is: with a calibration map over its scores."""
    scores = member_scores(pipeline, X)
    calibrator = ScoreCalibrator("sigmoid", (hasattr(pipeline, "predict_proba"),)).fit(scores, y)
    return ChurnClassifier(members=[pipeline], calibrator=calibrator, names=[name])


TREE_ENSEMBLES = ("random_forest", "hist_gradient_boosting", "xgboost", "lightgbm", "catboost")


def check_round_trip(job: JobSpec, X: pd.DataFrame, y: pd.Series, rows: int) -> None:
    """Fit every family's covering grid points on a tiny sample; each inference pipeline must
    dump and load back with the trusted types only."""
    Xs, ys = tiny_sample(X, y, rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipeline.skops")
        for fam, (pipeline, grid) in family_grids(job).items():
            # a few trees show the same types as many, and save and load in a fraction of the time
            few = {k: 3 for k in ("model__n_estimators", "model__max_iter")
                   if k in pipeline.get_params() and fam in TREE_ENSEMBLES}
            for point in covering_points(grid):
                fitted = fresh(pipeline, {**point, **few}).fit(Xs, ys)
                try:
                    dump_pipeline(registered_form(inference_pipeline(fitted), Xs, ys, fam), path)
                except UntrustedModelError as exc:
                    raise RoundTripError(f"{fam}: the fitted model could not be saved and loaded back as the "
                                         f"registered model ({exc}); no search was run") from None


def round_trip_once(job: JobSpec, X: pd.DataFrame, y: pd.Series, rows: int, key: str) -> bool:
    """:func:`check_round_trip` for ``key`` (the search cache's key: data, spec and code), unless it
    passed already for that key; True when the earlier pass was reused."""
    # skops decides what loads back: its version is part of the key (the search key holds the fitting libraries')
    mark = Path(job.data.output) / "preflight-cache" / f"{key}-skops-{importlib.metadata.version('skops')}.passed"
    if mark.is_file():
        return True
    check_round_trip(job, X, y, rows)
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError:  # a read-only output folder: the check just runs again next time
        pass
    return False
