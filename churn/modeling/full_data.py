"""The full-data fit: the sample search's best xgboost configuration trained on every train row with
``xgboost.dask``, stopping early on the validation split.

* :func:`preprocessing` — the steps of the sample's fitted pipeline before the model (coerce, sums,
  :class:`~churn.modeling.features.CategoryEncoder`, selection); every partition is transformed by
  them on the workers, so the categories are the sample's;
* :func:`check_memory` — before anything is persisted: the fit needs about twice the raw feature
  matrix as float32 (xgboost#11614: the quantised matrix is built beside the data) plus the
  persisted partitions; a cluster whose workers' memory limits cannot hold that is refused in one
  line naming the size and what to add;
* :func:`fit_full` — persist the transformed partitions once, quantise them once
  (``DaskQuantileDMatrix``; the validation split with ``ref=`` the training one, so both share its
  bins), choose the tree depth for the full row count on a depth ladder (:func:`climb`), then train
  with ``xgboost.dask.train`` and early stopping; each worker trains with its own
  threads (xgboost.dask's default: ``nthread`` = the Dask worker's threads), XGBoost's tracker where
  the cluster spec's ``xgboost`` section says (:func:`collective_config`);
* :func:`full_data_model` — the fitted preprocessing and the booster as one inference pipeline;
* :func:`validation_scores`, :func:`calibrate_on_validation`, :class:`Choice` — the full-data model
  and the sample champion scored on the validation split, which neither was fitted on; the full-data
  model's calibration map and threshold come from it too.

Why a depth ladder: the sample search picks the capacity that suits its 200,000 rows, and more rows
support deeper trees (bench-scale, 13.2 M train rows: the sample's depth 3 ran into the 2,000-round
cap and closed 26 % of the gap to the Bayes AUC, while one fixed depth-6 configuration on 2 M rows
already did better). So before the full fit, the sample's configuration is trained on a subset of
``churn.full-data.ladder-rows-factor`` times the search sample's rows, at its own depth and then
``ladder-depth-step`` deeper at a time, stopping at the first rung that does not raise the
validation score by ``ladder-min-gain``; the full fit uses the best rung's depth (more rows never
support less depth than a subset of them does). When the subset is the whole train split, the best
rung is the full-data model.

A worker lost during the fit: XGBoost's collective has no recovery (a rescheduled training task
refuses to run on another worker, and the survivors wait in their collective calls). The fit is
watched: when a worker that holds training data leaves the scheduler, the training futures are
cancelled and :class:`FullDataFitError` says so in one line; no booster comes out of it. The
collective's own timeout (``churn.full-data.collective-timeout``, or the cluster spec's
``xgboost.timeout``) frees the survivors' threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import xgboost as xgb
from distributed import Client, Future
from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from xgboost import dask as dxgb
from xgboost.collective import Config as CollConfig

from churn.clusters.errors import ClusterError
from churn.clusters.info import workers as cluster_workers
from churn.clusters.scatter import scatter
from churn.config import setting
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN
from churn.modeling.pipeline import inference_pipeline

log = logging.getLogger(__name__)

# the job's scoring -> the metric xgboost stops early on (on the validation split)
STOPPING_METRIC = {"roc_auc": "auc", "average_precision": "aucpr", "neg_log_loss": "logloss"}
FLOAT32 = 4  # bytes per feature cell in XGBoost's input matrix
XGB_COPIES = 2  # the raw matrix and its quantised copy live side by side during the fit (xgboost#11614)
LOSS_GRACE = 10.0  # seconds a failed fit waits for the scheduler to report a lost worker (measured: < 1 s)


class FullDataMemoryError(ClusterError):
    """The cluster's workers cannot hold what the full-data fit needs."""


class FullDataFitError(ClusterError):
    """The full-data fit did not complete (a worker was lost during it); no model came out of it."""


@dataclass
class FullFit:
    """A booster trained on every train row, and the fitted steps its input goes through."""

    booster: xgb.Booster  # cut to the best round
    preprocess: Pipeline  # the sample's fitted steps before the model
    params: dict[str, Any]
    rows: int  # train rows it learned from
    validation_rows: int  # rows it stopped early on
    rounds: int  # boosting rounds kept (best round + 1)
    max_rounds: int
    patience: int
    metric: str
    best_score: float
    seconds: float
    workers: int
    history: list[float] = field(default_factory=list, repr=False)
    ladder: list[Rung] = field(default_factory=list)  # the depths tried on the ladder's subset
    ladder_rows: int = 0  # train rows the ladder's fits learned from
    levels: dict[str, tuple[int, int]] = field(default_factory=dict)  # column -> (sample's levels, kept now)

    @property
    def levels_line(self) -> str:
        """Category levels per column, the sample's encoder's and the full-data model's."""
        return ", ".join(f"{c} {a:,} -> {b:,}" for c, (a, b) in self.levels.items())

    @property
    def ladder_line(self) -> str:
        """The ladder as one line: each depth's validation score and rounds, and the rows it ran on."""
        if not self.ladder:
            return ""
        rungs = ", ".join(f"depth {r.max_depth}: {r.score:.4f} ({r.rounds} rounds, {r.seconds:.0f} s)"
                          for r in self.ladder)
        return f"{rungs}; on {self.ladder_rows:,} train rows; depth {self.params['max_depth']} kept"


@dataclass(frozen=True)
class Rung:
    """One fit of the depth ladder."""

    max_depth: int
    score: float  # best validation score (the stopping metric)
    rounds: int  # best round + 1
    seconds: float


def preprocessing(fitted: Any) -> Pipeline:
    """The fitted steps before the model of a sample-searched pipeline (samplers left out: they only
    act while fitting)."""
    steps = inference_pipeline(fitted).steps
    return Pipeline(steps[:-1])


def level_counts(train: dd.DataFrame, before: Pipeline | None, features: list[str], columns: list[str]
                 ) -> dict[str, pd.Series]:
    """Each of ``columns``' level counts over every row of ``train`` (raw rows through ``before``, the
    fitted steps ahead of the encoder), counted per partition on the workers and summed there: only
    the counts (one row per level) come back to the driver."""
    def count(frame: pd.DataFrame) -> pd.DataFrame:
        X = before.transform(frame[features]) if before is not None else frame[features]
        parts = [X[c].dropna().astype(str).value_counts().rename_axis("level").reset_index(name="n").assign(column=c)
                 for c in columns]
        return pd.concat(parts, ignore_index=True)[["column", "level", "n"]]

    meta = pd.DataFrame({"column": pd.Series(dtype=object), "level": pd.Series(dtype=object),
                         "n": pd.Series(dtype="int64")})
    summed = train.map_partitions(count, meta=meta).groupby(["column", "level"])["n"].sum().compute()
    return {c: summed.xs(c, level="column") if c in summed.index.get_level_values("column") else
            pd.Series(dtype="int64") for c in columns}


def widened(preprocess: Pipeline, train: dd.DataFrame, features: list[str]
            ) -> tuple[Pipeline, dict[str, tuple[int, int]]]:
    """``preprocess`` with its category encoder refitted on the level counts of every train row.

    The sample's encoder keeps the levels its 200,000 rows saw often enough (at most 64 a column,
    codes as numbers above 16 levels, :class:`~churn.modeling.features.CategoryEncoder`): right for
    a sample, where rare levels overfit, but a handset model seen 3 times in the sample has
    hundreds of rows in the full split, and its own effect is signal the full-data fit can learn.
    So the full-data model keeps every level with at least ``churn.full-data.min-level-rows`` train
    rows (at most ``max-levels`` a column), split natively by XGBoost. Returns the pipeline and,
    per column, (levels the sample kept, levels kept now); a pipeline without a category encoder
    comes back as it is."""
    from churn.modeling.features import CategoryEncoder

    names = [name for name, _ in preprocess.steps]
    if "encode" not in names or not isinstance(preprocess.named_steps["encode"], CategoryEncoder):
        return preprocess, {}
    at = names.index("encode")
    sample = preprocess.named_steps["encode"]
    if not list(sample.categorical):
        return preprocess, {}
    counts = level_counts(train, preprocess[:at] if at else None, features, [str(c) for c in sample.categorical])
    most = int(setting("full-data.max-levels"))
    wide = CategoryEncoder(categorical=sample.categorical, max_levels=most, min_count=int(setting(
        "full-data.min-level-rows")), max_native_levels=most).fit_counts(counts, sample.feature_names_in_)
    steps = list(preprocess.steps)
    steps[at] = ("encode", wide)
    return Pipeline(steps), {c: (len(sample.levels_[c]), len(wide.levels_[c])) for c in wide.levels_}


def model_of(fitted: Any) -> BaseEstimator:
    """The model step of a fitted pipeline."""
    return fitted.steps[-1][1]


def booster_params(model: BaseEstimator, counts: dict[int, int], seed: int, scoring: str) -> dict[str, Any]:
    """XGBoost's training parameters from the sample's best xgboost estimator (its own
    :meth:`~churn.modeling.boosting.XGBoostClassifier.booster_params`: depth, learning rate, minimum
    child weight, lambda, bins, one-hot limit), so the full-data fit trains the configuration the
    sample chose; balanced class weights become ``scale_pos_weight`` over the full train split's
    class counts (``counts``); early stopping watches the job's scoring where XGBoost has it. No
    ``nthread``: each worker trains with its own threads."""
    balanced = model.get_params().get("class_weight") == "balanced"
    out = model.booster_params(counts.get(0, 0) / max(counts.get(1, 0), 1) if balanced else 1.0)
    out.pop("nthread", None)
    out.update(seed=seed, eval_metric=STOPPING_METRIC.get(scoring, "logloss"))
    return out


def _transform(frame: pd.DataFrame, preprocess: Pipeline, features: list[str]) -> pd.DataFrame:
    """One partition through the fitted steps, with its 0/1 label."""
    out = preprocess.transform(frame[features])
    out = out.astype({c: np.float32 for c in out.columns if not isinstance(out[c].dtype, pd.CategoricalDtype)})
    return out.assign(**{LABEL_COLUMN: frame[LABEL_COLUMN].to_numpy(np.float32)})


def transformed(ddf: dd.DataFrame, preprocess: Pipeline, features: list[str], example: pd.DataFrame
                ) -> dd.DataFrame:
    """``ddf``'s rows through ``preprocess`` on the workers (lazy); ``example`` (a few raw rows) gives
    the output's columns and types."""
    meta = _transform(example.iloc[:0], preprocess, features)
    return ddf.map_partitions(_transform, preprocess, features, meta=meta)


def bytes_per_row(preprocess: Pipeline, features: list[str], example: pd.DataFrame) -> tuple[float, int]:
    """(bytes a transformed row holds in memory, feature columns), measured on ``example``."""
    out = _transform(example, preprocess, features)
    # a category column's rows hold its codes; its levels are one index per partition, not per row
    # (counted deep, 4,096 levels' text would make 100 example rows look like 30 GiB of data)
    cells = sum(out[c].cat.codes.nbytes if isinstance(out[c].dtype, pd.CategoricalDtype)
                else out[c].memory_usage(deep=True, index=False) for c in out.columns)
    return float(cells + out.index.nbytes) / max(len(out), 1), out.shape[1] - 1


def memory_needed(rows: int, columns: int, row_bytes: float) -> int:
    """Bytes the fit needs on the workers: the raw matrix as float32 twice, plus the persisted partitions."""
    return int(rows * columns * FLOAT32 * XGB_COPIES + rows * row_bytes)


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_memory(client: Client, rows: int, columns: int, row_bytes: float) -> int:
    """Refuse, in one line, a fit whose estimated need exceeds what the workers may use (their memory
    limits times ``churn.full-data.memory-fraction``); returns the need in bytes. Workers without a
    memory limit are not checked."""
    need = memory_needed(rows, columns, row_bytes)
    workers = cluster_workers(client).values()
    limits = [int(w.get("memory_limit") or 0) for w in workers]
    if not limits or not all(limits):
        log.info("full-data fit: needs about %s; the workers have no memory limit to check it against", _gib(need))
        return need
    fraction = float(setting("full-data.memory-fraction"))
    usable = fraction * sum(limits)
    if need > usable:
        per_worker = fraction * max(limits)
        more = int(np.ceil((need - usable) / per_worker))
        raise FullDataMemoryError(
            f"the full-data fit needs about {_gib(need)} of worker memory ({rows:,} rows x {columns} features as "
            f"float32, twice for xgboost's quantised copy, plus the persisted partitions), but the {len(limits)} "
            f"workers may use {_gib(usable)} ({fraction:.0%} of their memory limits): add {more} worker(s) of "
            f"{_gib(max(limits))}, or give each worker {_gib(need / fraction / len(limits))}")
    log.info("full-data fit: needs about %s of the workers' %s", _gib(need), _gib(usable))
    return need


class _LostWorkerWatch:
    """Watches the scheduler while the fit runs: when a worker that holds training data leaves, the
    client's futures are cancelled, which ends the wait in ``xgboost.dask.train``."""

    def __init__(self, client: Client, workers: set[str], poll: float = 0.5):
        self.client, self.workers, self.poll = client, workers, poll
        self.lost: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn-full-data-watch", daemon=True)

    def __enter__(self) -> _LostWorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def wait_for_loss(self, seconds: float) -> bool:
        """Has (or does, within ``seconds``) a watched worker left?"""
        deadline = time.monotonic() + seconds
        while not self.lost and time.monotonic() < deadline:
            time.sleep(0.1)
        return bool(self.lost)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                now = set(cluster_workers(self.client))
            except Exception:  # noqa: BLE001 - a scheduler that does not answer: the client fails by itself
                continue
            lost = self.workers - now
            if lost and not self.lost:
                self.lost = lost
                log.error("full-data fit: worker(s) %s left during the fit; stopping it", ", ".join(sorted(lost)))
            if self.lost:
                states = self.client.futures
                keys = [k for k in list(states) if getattr(states.get(k), "status", None) != "cancelled"]
                if keys:
                    try:
                        self.client.cancel([Future(k, self.client) for k in keys], force=True)
                    except Exception:  # noqa: BLE001 - the scheduler may be gone too
                        pass


@dataclass
class _Placed:
    """One split's transformed partitions in worker memory: as a Dask dataframe, and as futures with
    their row counts and the worker holding each."""

    ddf: dd.DataFrame
    futures: list[Future]
    sizes: list[int]
    holders: list[str]

    def subset(self, rows: int) -> _Placed:
        """About ``rows`` of the rows: from each worker, evenly spaced partitions of its own in the same
        share (every worker keeps rows: XGBoost trains on the workers of the training matrix, and each
        must hold rows of it). Partitions are CSV blocks filtered by the entity-hash split, so evenly
        spaced ones cover the whole file."""
        total = sum(self.sizes)
        if rows >= total:
            return self
        share = rows / total
        keep: list[int] = []
        for worker in sorted(set(self.holders)):
            own = [i for i, w in enumerate(self.holders) if w == worker]
            k = max(1, round(share * len(own)))
            keep += [own[j] for j in np.unique(np.linspace(0, len(own) - 1, k).round().astype(int))]
        if len(keep) == len(self.futures):  # rounding kept every partition: the whole split, not a copy
            return self
        keep.sort()
        futures = [self.futures[i] for i in keep]
        return _Placed(dd.from_delayed(futures, meta=self.ddf._meta, verify_meta=False), futures,
                       [self.sizes[i] for i in keep], [self.holders[i] for i in keep])


def _placed(client: Client, ddfs: list[dd.DataFrame]) -> tuple[list[_Placed], set[str]]:
    """``ddfs`` (the transformed train and validation splits) computed once into worker memory, their
    partitions dealt round-robin over the workers, empty ones left out; and the workers that hold them.

    XGBoost refuses a worker with no rows of a DMatrix that has categorical columns ("A worker cannot
    have empty input"), and a worker's rows of every DMatrix are the partitions it holds: each worker
    must hold rows of both splits. A split with fewer partitions than workers is cut into one per worker
    first; placement is asked of the scheduler (locality), not forced, so a lost worker does not hang it.
    """
    workers = sorted(cluster_workers(client))
    out = []
    for ddf in ddfs:
        if ddf.npartitions < len(workers):
            ddf = ddf.repartition(npartitions=len(workers))
        futures = [client.compute(part, workers=[workers[i % len(workers)]], allow_other_workers=True)
                   for i, part in enumerate(ddf.to_delayed())]
        sizes = client.gather(client.map(len, futures, pure=False))
        kept = [(f, n) for f, n in zip(futures, sizes, strict=True) if n]
        where = client.who_has([f for f, _ in kept])
        holders = [min(where.get(f.key) or [""]) for f, _ in kept]
        out.append(_Placed(dd.from_delayed([f for f, _ in kept], meta=ddf._meta, verify_meta=False),
                           [f for f, _ in kept], [n for _, n in kept], holders))
    if set(out[0].holders) != set(out[1].holders):
        raise FullDataFitError(f"the train and validation splits could not both be given to each of the "
                               f"{len(workers)} workers (XGBoost needs rows of both on every worker it trains "
                               "on): too few validation rows for this many workers; raise split.validation")
    return out, set(out[0].holders)


def collective_config(collective: dict[str, Any] | None) -> CollConfig:
    """The settings of XGBoost's collective for the fit: the cluster spec's tracker host, port and
    timeout (``collective``: :func:`churn.clusters.xgboost_collective`'s keyword arguments, None for a
    kind without an ``xgboost`` section: XGBoost's defaults), the timeout
    ``churn.full-data.collective-timeout`` unless the spec sets one."""
    timeout = int(pd.Timedelta(setting("full-data.collective-timeout")).total_seconds())
    return CollConfig(**{"timeout": timeout, **(collective or {})})


def _better(metric: str, score: float, than: float, gain: float) -> bool:
    """Does validation ``score`` beat ``than`` by at least ``gain`` (log loss: lower is better)?"""
    return (than - score if metric == "logloss" else score - than) >= gain


def _train(client: Client, params: dict[str, Any], dtrain: Any, dvalid: Any, max_rounds: int, patience: int,
           coll: CollConfig) -> tuple[xgb.Booster, list[float], int]:
    """One ``xgboost.dask.train`` with early stopping on ``dvalid``: the booster cut to its best round,
    the validation history, and the best round's index."""
    with client.as_current():
        out = dxgb.train(client, params, dtrain, num_boost_round=max_rounds, evals=[(dvalid, "validation")],
                         early_stopping_rounds=patience, verbose_eval=False, coll_cfg=coll)
    booster = out["booster"]
    best = (int(booster.best_iteration) if booster.attr("best_iteration") is not None
            else booster.num_boosted_rounds() - 1)
    return booster[: best + 1], [float(v) for v in out["history"]["validation"][params["eval_metric"]]], best


def climb(fit_depth: Any, start: int, *, step: int, max_depth: int, rungs: int, metric: str, min_gain: float
          ) -> tuple[list[Rung], Rung, Any]:
    """The depth ladder: ``fit_depth(depth) -> (Rung, model)`` at ``start``, then ``step`` deeper at a
    time while each rung beats the best so far by ``min_gain`` (at most ``rungs`` fits, no deeper than
    ``max_depth``). Returns the rungs tried, the best one (whose depth the full fit uses) and its model."""
    best_rung, best_model = fit_depth(start)
    tried = [best_rung]
    depth = start + step
    while len(tried) < rungs and depth <= max_depth:
        rung, model = fit_depth(depth)
        tried.append(rung)
        if not _better(metric, rung.score, best_rung.score, min_gain):
            break
        best_rung, best_model = rung, model
        depth += step
    return tried, best_rung, best_model


def fit_full(train: dd.DataFrame, validation: dd.DataFrame, features: list[str], fitted: Any,
             example: pd.DataFrame, seed: int, scoring: str, client: Client, counts: dict[str, dict[int, int]],
             max_rounds: int | None = None, patience: int | None = None,
             collective: dict[str, Any] | None = None, ladder_rows: int | None = None) -> FullFit:
    """Train ``fitted``'s xgboost configuration (a sample-searched pipeline) on every row of ``train``,
    stopping early on ``validation`` (raw splits as Dask dataframes; ``example``: a few raw rows;
    ``counts``: rows per split and class, :func:`churn.data.split.class_counts`; ``collective``: the
    cluster spec's tracker settings, :func:`collective_config`), at the depth the ladder chose on
    about ``ladder_rows`` train rows (None: no ladder, the sample's depth). Checks the memory first,
    then persists the transformed partitions once. Raises :class:`FullDataMemoryError` or
    :class:`FullDataFitError`."""
    t0 = time.perf_counter()
    max_rounds = int(max_rounds or setting("full-data.max-rounds"))
    patience = int(patience or setting("full-data.patience"))
    sample_steps = preprocessing(fitted)
    params = booster_params(model_of(fitted), counts["train"], seed, scoring)
    rows, n_valid = sum(counts["train"].values()), sum(counts["validation"].values())
    if n_valid == 0:
        raise FullDataFitError("the validation split is empty: the full-data fit has nothing to stop early on "
                               "(set split.validation above 0, or auto)")
    # before any pass over the data; the sample's steps give the same columns, and a category cell as
    # a float code (8 bytes) or a code of <= 16 levels, never less than the widened encoder's
    row_bytes, columns = bytes_per_row(sample_steps, features, example)
    check_memory(client, rows + n_valid, columns, row_bytes)
    preprocess, levels = widened(sample_steps, train, features)
    if levels:
        log.info("full-data fit: category levels kept (sample -> every train row): %s",
                 ", ".join(f"{c} {a} -> {b}" for c, (a, b) in levels.items()))

    placed, holders = _placed(client, [transformed(d, preprocess, features, example) for d in (train, validation)])
    x_cols = [c for c in placed[0].ddf.columns if c != LABEL_COLUMN]
    ladder_part = placed[0].subset(ladder_rows) if ladder_rows else placed[0]

    def matrix(part: _Placed, ref: Any = None) -> Any:
        # max_bin as the booster's: XGBoost refuses a QuantileDMatrix binned otherwise
        return dxgb.DaskQuantileDMatrix(client, part.ddf[x_cols], part.ddf[LABEL_COLUMN], ref=ref,
                                        max_bin=params["max_bin"], enable_categorical=True)

    def matrices(part: _Placed) -> tuple[Any, Any]:
        # xgboost.dask looks the client type up through distributed.get_client(): churn's clients are
        # not the default one, so this one is made current. The validation matrix is binned with the
        # training one's cuts (ref=), and xgboost.dask finds that ref only among the matrices of the
        # same train call: each training matrix gets its own validation matrix.
        with client.as_current():
            d = matrix(part)
            return d, matrix(placed[1], ref=d)

    coll = collective_config(collective)
    metric = params["eval_metric"]
    n_ladder = sum(ladder_part.sizes)
    log.info("full-data fit: %s rows on %d worker(s), up to %d rounds, early stopping after %d on %s "
             "(validation, %s rows)", f"{rows:,}", len(holders), max_rounds, patience, metric, f"{n_valid:,}")
    with _LostWorkerWatch(client, holders) as watch:
        try:
            ladder: list[Rung] = []
            whole = ladder_part is placed[0]
            if ladder_rows:
                ladder_data = matrices(ladder_part)
                def fit_depth(depth: int) -> tuple[Rung, tuple[xgb.Booster, list[float], int]]:
                    t = time.perf_counter()
                    got = _train(client, {**params, "max_depth": depth}, *ladder_data, max_rounds, patience, coll)
                    rung = Rung(depth, got[1][got[2]], got[2] + 1, time.perf_counter() - t)
                    log.info("full-data depth ladder: depth %d on %s rows: validation %s %.4f after %d rounds "
                             "(%.0f s)", depth, f"{n_ladder:,}", metric, rung.score, rung.rounds, rung.seconds)
                    return rung, got

                ladder, best_rung, got = climb(
                    fit_depth, int(params["max_depth"]), step=int(setting("full-data.ladder-depth-step")),
                    max_depth=int(setting("full-data.ladder-max-depth")), rungs=int(setting("full-data.ladder-rungs")),
                    metric=metric, min_gain=float(setting("full-data.ladder-min-gain")))
                params = {**params, "max_depth": best_rung.max_depth}
                del ladder_data  # its quantised copies, before the full split's are made
            if not (ladder and whole):  # a ladder on the whole split already made the model
                got = _train(client, params, *matrices(placed[0]), max_rounds, patience, coll)
        except (Exception, asyncio.CancelledError) as exc:  # the watch's cancel may surface as asyncio's
            # a killed worker's peers fail at once (their collective sees the closed socket): give
            # the scheduler a moment to see which worker left, to name it
            if watch.wait_for_loss(LOSS_GRACE):
                raise FullDataFitError(_lost_message(watch.lost, len(holders))) from None
            raise FullDataFitError(f"the full-data fit failed, no model came out of it: "
                                   f"{type(exc).__name__}: {_first_line(exc)}") from None
        if watch.lost:  # finished, but a worker left meanwhile: not trusted
            raise FullDataFitError(_lost_message(watch.lost, len(holders)))
    booster, history, best = got
    return FullFit(booster, preprocess, params, rows, n_valid, best + 1, max_rounds, patience, metric,
                   history[best], time.perf_counter() - t0, len(holders), history, ladder,
                   n_ladder if ladder else 0, levels)


def _first_line(exc: BaseException) -> str:
    """The message of an XGBoost error without its stack: its last meaningful line."""
    lines = [ln.strip(" -") for ln in str(exc).splitlines() if ln.strip() and "[bt]" not in ln
             and not ln.startswith("Stack trace")]
    return lines[-1] if lines else type(exc).__name__


def _lost_message(lost: set[str], workers: int) -> str:
    return (f"the full-data fit lost {len(lost)} of its {workers} workers ({', '.join(sorted(lost))}) while it "
            "trained; XGBoost cannot go on without them, so no model came out of it: run the job again (the "
            "search is reused), on workers that stay up")


def full_data_model(fit: FullFit) -> Pipeline:
    """The inference pipeline of a full-data fit: the sample's fitted steps, then the booster as the
    family's estimator."""
    from churn.modeling.boosting import XGBoostClassifier

    p = fit.params
    model = XGBoostClassifier.from_booster(fit.booster, best_iteration=fit.rounds - 1, max_depth=p["max_depth"],
                                           learning_rate=p["eta"], min_child_weight=p["min_child_weight"],
                                           reg_lambda=p["lambda"], max_cat_to_onehot=p["max_cat_to_onehot"],
                                           max_bin=p["max_bin"], n_estimators=fit.rounds, random_state=p["seed"])
    return Pipeline([*fit.preprocess.steps, ("model", model)])


VALIDATION_SOURCE = "the validation split (cross-fitted calibrated probabilities)"


@dataclass
class Choice:
    """The full-data model against the sample champion on the validation split (neither fitted on it)."""

    winner: str  # "full-data" or "sample"
    scoring: str
    full_score: float
    sample_score: float
    full_rows: int  # train rows the full-data model learned from
    sample_rows: int  # rows the sample champion learned from (the search sample)
    validation_rows: int
    calibration_rows: int  # validation rows the full-data model's calibration map and threshold were fitted on
    rounds: int
    seconds: float
    calibration: str = ""  # the full-data model's calibration method (chosen on the validation rows)
    workers: int = 0  # workers the full-data fit trained on (its result depends on them)
    depth: int = 0  # the full-data model's tree depth
    ladder: str = ""  # the depth ladder that chose it (FullFit.ladder_line), "" without one
    levels: str = ""  # category levels kept, the sample's -> the full-data model's (FullFit.levels_line)

    @property
    def margin(self) -> float:
        """How much the winner's validation score beats the other's."""
        return abs(self.full_score - self.sample_score)

    @property
    def line(self) -> str:
        won, lost = ("full-data xgboost", "sample champion") if self.winner == "full-data" else \
            ("sample champion", "full-data xgboost")
        return (f"{won} won by {self.margin:.4f} validation {self.scoring} (full-data {self.full_score:.4f}, fitted on "
                f"{self.full_rows:,} rows, depth {self.depth}, {self.rounds} rounds, "
                f"calibration {self.calibration or 'none'}; "
                f"sample champion {self.sample_score:.4f}, fitted on "
                f"{self.sample_rows:,} rows; {self.validation_rows:,} validation rows, on which the full-data "
                f"model's rounds{' and depth were' if self.ladder else ' were'} also chosen) over the {lost}")


def validation_scores(ddf: dd.DataFrame, models: list[Any], features: list[str], client: Client
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, churn probabilities of each of ``models`` (one column each) and row keys of ``ddf``,
    in one pass over it: scored partition by partition on the workers, gathered in the driver (the
    calibration map is fitted on them). The validation split is capped (``split.validation: auto``:
    at most 1,000,000 rows, about 25 MB here for two models); the test split's evaluation is the
    one in constant memory (:mod:`churn.modeling.summary`)."""
    models_f = scatter(client, list(models), broadcast=True)  # once per worker, not once per partition task
    parts = client.gather([client.submit(_labels_and_scores, part, models_f, features, pure=False)
                           for part in client.compute(ddf.to_delayed())])
    if not parts:
        return np.zeros(0, np.int8), np.zeros((0, len(models))), np.zeros(0, np.uint64)
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]))


def _labels_and_scores(frame: pd.DataFrame, models: list[Any], features: list[str]
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not len(frame):
        return np.zeros(0, np.int8), np.zeros((0, len(models))), np.zeros(0, np.uint64)
    X = frame[features]
    return (frame[LABEL_COLUMN].to_numpy(np.int8), np.column_stack([m.predict_proba(X)[:, 1] for m in models]),
            frame[KEY_COLUMN].to_numpy(np.uint64))


def score_with(scoring: str, y: np.ndarray, p: np.ndarray) -> float:
    """The job's scoring of probabilities ``p`` on labels ``y``."""
    from churn.modeling.calibrate import fold_scores

    return float(fold_scores(np.asarray(y).astype(int), np.asarray(p, float), [(np.zeros(0, int), np.arange(len(y)))],
                             scoring)[0])


def calibration_sample(n: int, max_rows: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded sample of at most ``max_rows`` of ``n`` validation rows."""
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def calibrate_on_validation(y: np.ndarray, s_full: np.ndarray, *, method: str, cv: int, seed: int, max_rows: int
                            ) -> tuple[Any, np.ndarray, np.ndarray]:
    """The full-data model's calibration map, fitted on a seeded sample of at most ``max_rows``
    validation rows; returns (calibration, sample positions, its probability for every validation
    row: cross-fitted on the sample's rows, the map's elsewhere — no row scored by a map fitted on it)."""
    from churn.modeling.calibrate import calibrate
    from churn.modeling.search import folds

    y = np.asarray(y).astype(int)
    at = calibration_sample(len(y), max_rows, seed)
    splits = list(folds(cv, seed).split(np.zeros((len(at), 1)), y[at]))
    cal = calibrate(s_full[at].reshape(-1, 1), y[at], splits, (True,), method)
    p = cal.calibrator.predict(s_full.reshape(-1, 1))
    p[at] = cal.oof_proba
    return cal, at, p
