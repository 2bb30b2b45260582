"""Hyper-parameter search with cross-validation, executed on the Dask cluster.

Three strategies:

* ``engine: churn`` (default) — an exact grid search that gives the same ``cv_results_``
  scores as scikit-learn's ``GridSearchCV`` but does less work:

  - the training data is scattered to the workers once;
  - every fold's preprocessing, feature selection and SMOTE are fitted once per distinct
    setting of those steps and reused by every model candidate on that fold (they stay on
    the worker as a future, and the model fits are scheduled next to them);
  - a random forest's first *k* trees are the *k*-tree forest (same ``random_state``), so one
    forest with the largest ``n_estimators`` scores every smaller one;
  - scikit-learn raises ``min_samples_split`` to ``2 * min_samples_leaf``, so grid points
    that differ only below that bound are one model, fitted once.
* ``engine: sklearn`` — scikit-learn's ``GridSearchCV`` under ``joblib.parallel_backend("dask")``.
* ``strategy: halving`` — ``HalvingGridSearchCV`` (successive halving) under the dask
  backend: fast and approximate.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import joblib
import numpy as np
import pandas as pd
from distributed import Client, Future, as_completed
from distributed.client import FutureCancelledError
from distributed.comm.core import CommClosedError
from imblearn.pipeline import Pipeline as ImbPipeline
from scipy.stats import rankdata
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from churn.clusters.scatter import scatter
from churn.modeling.compat import forest_checked_X, safe_indexing
from churn.modeling.pipeline import inference_pipeline
from churn.modeling.plan import GroupKey, plan
from churn.serving.calibration import member_scores

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """The outcome of one family's search."""

    best_estimator: ImbPipeline
    best_params: dict[str, Any]
    best_score: float
    cv_results: pd.DataFrame
    seconds: float
    n_candidates: int
    n_fits: int = 0  # model fits the search needs (after sharing); candidates x folds for sklearn
    fits_restored: int = 0  # of those, how many came from checkpoints of an interrupted run (not fitted again)
    oof_proba: np.ndarray | None = field(default=None, repr=False)  # best candidate's scores, out of fold
    # (probabilities, or decision values for a model without them: see ``proba_scores``)
    std_score: float = float("nan")  # standard deviation of the best candidate's fold scores
    best_index: int | None = None  # the best candidate's row in ``cv_results``
    imbalance: str = ""  # the best candidate's imbalance treatment (set by the caller)
    rows_per_fit: int = 0  # training rows each fit saw at most (a family row cap; set by the caller)
    task_seconds: float = 0.0  # compute time spent in fits (and fold preparation), summed over workers
    # the best candidate on each further CV repeat (fresh folds: see rescore_best): its out-of-fold
    # scores, and the scorer's value on each fold
    rescored_oof: list[np.ndarray] = field(default_factory=list, repr=False)
    rescored_scores: list[np.ndarray] = field(default_factory=list, repr=False)
    # the best candidate's k fitted inference pipelines of the first fresh repeat (fold i's model made
    # rescored_oof[0] on fold i's test rows): futures on the workers until the champion is chosen, then
    # fitted pipelines (see bagged_members); empty when not kept
    fold_models: list[Any] = field(default_factory=list, repr=False)
    predict_seconds: float = float("nan")  # CPU seconds per row one fold model took to score its test rows

    @property
    def proba_scores(self) -> bool:
        """Are the out-of-fold scores probabilities?"""
        return hasattr(self.best_estimator, "predict_proba")


class RowsOnCluster:
    """The search rows (``X`` and the 0/1 label) for the workers: sent to every worker on first
    use, then shared by whatever else the job fits on the same rows (the feature-sums screen, the
    search and the rescoring), so they cross the network once per job."""

    def __init__(self, X: pd.DataFrame, y: pd.Series, client: Client):
        self.X = X
        self.y = pd.Series(np.asarray(y).astype(int), index=X.index, name="label")
        self.client = client
        self._futures: tuple[Future, Future] | None = None

    def futures(self) -> tuple[Future, Future]:
        if self._futures is None:
            X_f, y_f = scatter(self.client, [self.X, self.y], broadcast=True)
            self._futures = (X_f, y_f)
        return self._futures


def folds(cv: int, seed: int, repeat: int = 0) -> StratifiedKFold:
    """The CV splitter: stratified, shuffled with the job's seed (deterministic); ``repeat`` r > 0
    is the r-th fresh split the best candidates are rescored on (seed + r)."""
    return StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed + repeat)


# --------------------------------------------------------------------------- tasks
def _prepare_fold(prefix: list[tuple[str, Any]], params: dict[str, Any], X: Any, y: Any,
                  train: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """Fit the steps before the model on one training fold, as imblearn's Pipeline does."""
    t0 = time.perf_counter()
    with threadpool_limits(1):
        Xt, yt = safe_indexing(X, train), safe_indexing(y, train)
        Xv, yv = safe_indexing(X, test), safe_indexing(y, test)
        for name, template in prefix:
            own = {k.split("__", 1)[1]: v for k, v in params.items() if k.split("__", 1)[0] == name}
            step = clone(template).set_params(**own)
            if hasattr(step, "fit_resample"):
                Xt, yt = step.fit_resample(Xt, yt)
            else:
                Xt = step.fit_transform(Xt, yt)
                Xv = step.transform(Xv)
    return {"X": Xt, "y": np.asarray(yt), "X_test": Xv, "y_test": np.asarray(yv),
            "seconds": time.perf_counter() - t0}



class FixedScores(ClassifierMixin, BaseEstimator):
    """Stands in for a fitted classifier whose test probabilities are already known."""

    def __init__(self, classes: np.ndarray | None = None, proba: np.ndarray | None = None):
        self.classes = classes
        self.proba = proba

    def fit(self, X: Any, y: Any) -> FixedScores:  # pragma: no cover - never fitted
        return self

    @property
    def classes_(self) -> np.ndarray:
        return self.classes

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.proba

    def predict(self, X: Any) -> np.ndarray:
        return self.classes.take(np.argmax(self.proba, axis=1), axis=0)


def _forest_prefix_proba(forest: RandomForestClassifier, X: Any, sizes: list[int]) -> dict[int, np.ndarray]:
    """predict_proba of the forests made of the first k trees, summed in tree order as sklearn does."""
    X = forest_checked_X(forest, X)
    total = np.zeros((X.shape[0], forest.n_classes_), dtype=np.float64)
    out = {}
    wanted = set(sizes)
    for i, tree in enumerate(forest.estimators_, 1):
        total += tree.predict_proba(X, check_input=False)
        if i in wanted:
            out[i] = total / i
    return out


def _fit_group(fold: dict[str, Any], template: Any, params: dict[str, Any], sizes: list[int] | None,
               scoring: str) -> dict[Any, dict[str, Any]]:
    """Fit one model (or one forest for several sizes) on a prepared fold; score on its test part."""
    scorer = check_scoring(template, scoring=scoring)
    with threadpool_limits(1):
        model = clone(template).set_params(**params)
        if sizes:
            model.set_params(n_estimators=max(sizes))
        t0 = time.perf_counter()
        model.fit(fold["X"], fold["y"])
        fit_time = time.perf_counter() - t0
        out = {}
        if sizes:
            t0 = time.perf_counter()
            probas = _forest_prefix_proba(model, fold["X_test"], sizes)
            for k, proba in probas.items():
                stand_in = FixedScores(model.classes_, proba)
                out[k] = {"score": float(scorer(stand_in, fold["X_test"], fold["y_test"])),
                          "proba": proba[:, 1], "fit_time": fit_time * k / max(sizes)}
            score_time = (time.perf_counter() - t0) / len(probas)
            for v in out.values():
                v["score_time"] = score_time
                v["prepare_seconds"] = fold["seconds"]
        else:
            t0 = time.perf_counter()
            score = float(scorer(model, fold["X_test"], fold["y_test"]))
            proba = member_scores(model, fold["X_test"])  # a decision function where no probabilities
            out[None] = {"score": score, "proba": proba, "fit_time": fit_time,
                         "score_time": time.perf_counter() - t0, "prepare_seconds": fold["seconds"]}
    return out


def _refit(pipeline: ImbPipeline, params: dict[str, Any], X: Any, y: Any) -> ImbPipeline:
    with threadpool_limits(1):
        return clone(pipeline).set_params(**params).fit(X, y)


def refit_best(results: list[SearchResult], X: pd.DataFrame, y: pd.Series, client: Client) -> list[ImbPipeline]:
    """The best candidate of each search fitted again on ``X``/``y``, on the workers; the rows go
    to the cluster once for all of them."""
    y = pd.Series(np.asarray(y).astype(int), index=X.index, name="label")
    X_f, y_f = scatter(client, [X, y])
    return client.gather([client.submit(_refit, clone(r.best_estimator), {}, X_f, y_f, pure=False)
                          for r in results])


# --------------------------------------------------------------------------- results
def _cv_results(candidates: list[dict[str, Any]], scores: np.ndarray, fit_times: np.ndarray,
                score_times: np.ndarray, apportioned: list[bool]) -> pd.DataFrame:
    """A ``cv_results_`` table ranked exactly as scikit-learn ranks it.

    ``fit_time_apportioned`` marks candidates whose fit time is their share (k / max trees) of
    one shared forest's fit, not a fit of their own.
    """
    n_splits = scores.shape[1]
    results: dict[str, Any] = {}
    for name, arr in (("fit_time", fit_times), ("score_time", score_times)):
        results[f"mean_{name}"] = arr.mean(axis=1)
        results[f"std_{name}"] = arr.std(axis=1)
    for k in sorted({k for c in candidates for k in c}):
        results[f"param_{k}"] = [c.get(k) for c in candidates]
    results["params"] = candidates
    for s in range(n_splits):
        results[f"split{s}_test_score"] = scores[:, s]
    means = np.average(scores, axis=1)
    results["mean_test_score"] = means
    results["std_test_score"] = np.sqrt(np.average((scores - means[:, None]) ** 2, axis=1))
    if np.isnan(means).all():
        ranks = np.ones(len(means), np.int32)
    else:
        filled = np.where(np.isnan(means), np.nanmin(means) - 1, means)
        ranks = rankdata(-filled, method="min").astype(np.int32)
    results["rank_test_score"] = ranks
    results["fit_time_apportioned"] = apportioned
    return pd.DataFrame(results)


# --------------------------------------------------------------------------- strategies
FitKey = tuple[GroupKey, int]  # (fit group, CV split): one model fit of the churn engine
FitOutput = dict[Any, dict[str, Any]]  # forest size (None: not a forest) -> score, proba, fit_time, ...


class FitCheckpoints(Protocol):
    """Where the churn engine keeps each finished fit as it ends (plain values only), so that a rerun
    after the driver was lost fits only the others (:class:`churn.modeling.search_cache.FitCheckpoints`)."""

    def restore(self, family: str, fits: list[FitKey]) -> dict[FitKey, FitOutput]:
        """The fits of ``fits`` kept earlier (those it has and can read)."""

    def save(self, family: str, fit: FitKey, output: FitOutput) -> None:
        """Keep one finished fit."""


@dataclass
class _Submitted:
    """One family's grid search, submitted: its plan, its fold-preparation and fit futures (fits restored
    from checkpoints are in ``done`` from the start, and neither they nor fold preparations only they
    needed are submitted: None in ``prepared``)."""

    pipeline: ImbPipeline
    plan: Any
    prepared: dict[Any, list[Future | None]]
    fits: dict[FitKey, Future]
    done: dict[FitKey, FitOutput] = field(default_factory=dict)
    n_planned: int = 0  # fits of the plan: fit groups x splits
    restored: int = 0  # of those, restored from checkpoints


def _submit_search(pipeline: ImbPipeline, grid: dict[str, list[Any]], X_f: Future, y_f: Future,
                   splits: list[tuple[np.ndarray, np.ndarray]], scoring: str, client: Client,
                   priority: int = 0, restore: Callable[[list[FitKey]], dict[FitKey, FitOutput]] | None = None
                   ) -> _Submitted:
    """Submit every fold preparation and fit of one family's search (none is waited for), but the fits
    ``restore`` gives back."""
    search_plan = plan(pipeline, grid)
    prefix_steps, template = pipeline.steps[:-1], pipeline.steps[-1][1]
    planned = [(key, s) for key in search_plan.groups for s in range(len(splits))]
    done = restore(planned) if restore is not None else {}
    todo = [fit for fit in planned if fit not in done]
    needed = {(search_plan.groups[key].prefix_key, s) for key, s in todo}
    prepared = {pk: [client.submit(_prepare_fold, prefix_steps, prefix, X_f, y_f, tr, te, pure=False,
                                   priority=priority) if (pk, s) in needed else None
                     for s, (tr, te) in enumerate(splits)]
                for pk, prefix in search_plan.prefixes.items()}
    fits = {}
    for key, s in todo:
        g = search_plan.groups[key]
        fits[(key, s)] = client.submit(_fit_group, prepared[g.prefix_key][s], template, g.params, g.sizes,
                                       scoring, pure=False, priority=priority - s)
    return _Submitted(pipeline, search_plan, prepared, fits, dict(done), len(planned), len(done))


def _tabulate(sub: _Submitted, splits: list[tuple[np.ndarray, np.ndarray]], n_rows: int
              ) -> tuple[pd.DataFrame, int, np.ndarray | None, float]:
    """(cv_results_, best candidate, its out-of-fold scores, task seconds) from a family's finished fits."""
    candidates, groups, done = sub.plan.candidates, sub.plan.groups, sub.done
    # each prepared fold is reported by every fit that used it: count it once
    prep_seconds = sum({(key[0], s): next(iter(out.values()))["prepare_seconds"]
                        for (key, s), out in done.items()}.values())
    n, k = len(candidates), len(splits)
    scores, fit_t, score_t = np.full((n, k), np.nan), np.zeros((n, k)), np.zeros((n, k))
    probas: dict[tuple[int, int], np.ndarray] = {}
    task_seconds = prep_seconds + sum(max(v["fit_time"] + v["score_time"] for v in out.values())
                                      for out in done.values())
    for (key, s), out in done.items():
        for size, members in groups[key].members.items():
            res = out[size]
            for i in members:
                scores[i, s], fit_t[i, s], score_t[i, s] = res["score"], res["fit_time"], res["score_time"]
                probas[(i, s)] = res["proba"]
    results = _cv_results(candidates, scores, fit_t, score_t, sub.plan.apportioned())
    best = int(results["rank_test_score"].to_numpy().argmin())
    return results, best, _out_of_fold([probas.get((best, s)) for s in range(k)], splits, n_rows), task_seconds


def _out_of_fold(scores: list[np.ndarray | None], splits: list[tuple[np.ndarray, np.ndarray]], n_rows: int
                 ) -> np.ndarray | None:
    """Each fold's test-row scores put back in row order; None when any fold has none."""
    if any(s is None for s in scores):
        return None
    oof = np.full(n_rows, np.nan)
    for s, (_, test) in zip(scores, splits, strict=True):
        oof[test] = s
    return oof


Progress = Callable[[str, int, int], None]  # (family, fits done, fits in all): 0 done at the start, then
# after each finished fit (scikit-learn's searches: 0 of 1, then 1 of 1)


def churn_grid_searches(searches: dict[str, tuple[ImbPipeline, dict[str, list[Any]]]], X: pd.DataFrame,
                        y: pd.Series, *, cv: StratifiedKFold, scoring: str, client: Client,
                        progress: Progress | None = None, rows: RowsOnCluster | None = None,
                        checkpoints: FitCheckpoints | None = None) -> dict[str, SearchResult]:
    """The exact, work-sharing grid search of the module docstring, for several families at once.

    Every family's fold preparations and fits are submitted together, the earlier families with
    the higher priority, so no worker idles at the tail of one family while the next waits; as a
    family's last fit ends its best candidate is refitted, alongside the other families' fits.
    The data go to the cluster once for all of them. A family's ``seconds`` is the wall time from
    the start until its refit was done (families overlap).

    With ``checkpoints``, each fit is handed to it as it ends, and the fits it has already (an
    earlier driver's, lost mid-search) are taken from it instead of being submitted: their scores,
    out-of-fold scores and fit times are the ones kept, so ``cv_results_`` is as if nothing had stopped.
    """
    t0 = time.perf_counter()
    splits = list(cv.split(X, y))
    X_f, y_f = (rows or RowsOnCluster(X, y, client)).futures()  # the data goes to the cluster once
    width = 1 + max(len(splits), 1)

    def restore(name: str) -> Callable[[list[FitKey]], dict[FitKey, FitOutput]] | None:
        return None if checkpoints is None else lambda fits: checkpoints.restore(name, fits)

    submitted = {name: _submit_search(pipe, grid, X_f, y_f, splits, scoring, client,
                                      priority=(len(searches) - i) * width, restore=restore(name))
                 for i, (name, (pipe, grid)) in enumerate(searches.items())}
    for name, sub in submitted.items():
        if sub.restored:
            log.info("search%s resumed: %d of %d fits restored from checkpoints, %d to run", f" {name}" if name else "",
                     sub.restored, sub.n_planned, sub.n_planned - sub.restored)
        if progress is not None:
            progress(name, len(sub.done), sub.n_planned)
    owner = {fut.key: (name, key) for name, sub in submitted.items() for key, fut in sub.fits.items()}
    tables: dict[str, tuple[pd.DataFrame, int, np.ndarray | None, float]] = {}
    refit_of: dict[str, str] = {}  # refit task key -> family
    out: dict[str, SearchResult] = {}
    running = as_completed([f for sub in submitted.values() for f in sub.fits.values()], loop=client.loop)

    def fitted(name: str) -> None:
        """The family's last fit is done: its best candidate, refitted now."""
        sub = submitted[name]
        tables[name] = _tabulate(sub, splits, len(X))
        refit = client.submit(_refit, sub.pipeline, sub.plan.candidates[tables[name][1]], X_f, y_f, pure=False,
                              priority=len(searches) * width + 1)
        refit_of[refit.key] = name
        running.add(refit)
        for futures in sub.prepared.values():
            client.cancel([f for f in futures if f is not None])

    for name, sub in submitted.items():
        if len(sub.done) == sub.n_planned:  # every fit restored
            fitted(name)
    for fut in running:
        if fut.key in refit_of:  # a family's refit: the family is done now
            name = refit_of[fut.key]
            results, best, oof, task_seconds = tables[name]
            sub = submitted[name]
            out[name] = SearchResult(fut.result(), dict(sub.plan.candidates[best]),
                                     float(results["mean_test_score"][best]), results, time.perf_counter() - t0,
                                     len(sub.plan.candidates), n_fits=sub.n_planned, fits_restored=sub.restored,
                                     oof_proba=oof, task_seconds=task_seconds,
                                     std_score=float(results["std_test_score"][best]), best_index=best)
            continue
        name, key = owner[fut.key]
        sub = submitted[name]
        sub.done[key] = fut.result()
        fut.release()
        if checkpoints is not None:
            checkpoints.save(name, key, sub.done[key])
        if progress is not None:
            progress(name, len(sub.done), sub.n_planned)
        if len(sub.done) == sub.n_planned:
            fitted(name)
    return {name: out[name] for name in searches}


@dataclass
class FoldResults:
    """A fixed pipeline's CV results: its score on each fold, and every row's out-of-fold score."""

    scores: np.ndarray
    oof: np.ndarray | None  # None when a fold gave no scores (FixedScores needs them)
    predict_seconds: float = float("nan")  # CPU seconds per row of one fold model's scoring (mean over folds)


def fold_scores_on_cluster(pipelines: dict[str, ImbPipeline], X: pd.DataFrame, y: pd.Series, *, cv: StratifiedKFold,
                           scoring: str, client: Client, rows: RowsOnCluster | None = None) -> dict[str, FoldResults]:
    """Each fixed pipeline's test score on every fold of ``cv`` and its out-of-fold scores (no grid,
    no refit), fitted on the cluster as the search fits: the data sent once, fold preparations
    shared per pipeline, every pipeline submitted before any is gathered."""
    splits = list(cv.split(X, y))
    X_f, y_f = (rows or RowsOnCluster(X, y, client)).futures()
    subs = {name: _submit_search(pipe, {}, X_f, y_f, splits, scoring, client) for name, pipe in pipelines.items()}
    out = {}
    for name, sub in subs.items():
        assert len(sub.plan.groups) == 1, "one fixed pipeline: one fit group"
        done = client.gather(sub.fits)  # (group key, fold) -> {forest size or None: result}
        by_fold = [next(iter(done[key].values())) for key in sorted(done, key=lambda k: k[1])]
        out[name] = FoldResults(np.array([res["score"] for res in by_fold]),
                                _out_of_fold([res["proba"] for res in by_fold], splits, len(X)))
    return out


def _fit_fold(pipeline: ImbPipeline, X: Any, y: Any, train: np.ndarray) -> Pipeline:
    """One fold's inference pipeline: ``pipeline`` fitted on the fold's training rows, samplers left out."""
    with threadpool_limits(1):
        return inference_pipeline(clone(pipeline).fit(safe_indexing(X, train), safe_indexing(y, train)))


def _score_fold(model: Pipeline, X: Any, y: Any, test: np.ndarray, scoring: str) -> dict[str, Any]:
    """A fold model's scorer value and churn scores on the fold's test rows."""
    with threadpool_limits(1):
        Xv, yv = safe_indexing(X, test), np.asarray(safe_indexing(y, test))
        t0 = time.thread_time()  # CPU time: what a busy machine does not inflate
        proba = member_scores(model, Xv)
        seconds = time.thread_time() - t0
        return {"score": float(check_scoring(model, scoring=scoring)(model, Xv, yv)), "proba": proba,
                "seconds_per_row": seconds / max(len(test), 1)}


def fold_models_on_cluster(pipelines: dict[str, ImbPipeline], X: pd.DataFrame, y: pd.Series, *,
                           cv: StratifiedKFold, scoring: str, client: Client, rows: RowsOnCluster | None = None
                           ) -> dict[str, tuple[FoldResults, list[Future]]]:
    """As :func:`fold_scores_on_cluster`, keeping each fold's fitted inference pipeline on the
    worker that fitted it (a future per fold, in fold order): only the scores come back."""
    splits = list(cv.split(X, y))
    X_f, y_f = (rows or RowsOnCluster(X, y, client)).futures()
    models = {name: [client.submit(_fit_fold, pipe, X_f, y_f, train, pure=False) for train, _ in splits]
              for name, pipe in pipelines.items()}
    scored = {name: [client.submit(_score_fold, m, X_f, y_f, test, scoring, pure=False)
                     for m, (_, test) in zip(futures, splits, strict=True)] for name, futures in models.items()}
    out = {}
    for name, futures in scored.items():
        by_fold = client.gather(futures)
        out[name] = (FoldResults(np.array([res["score"] for res in by_fold]),
                                 _out_of_fold([res["proba"] for res in by_fold], splits, len(X)),
                                 float(np.mean([res["seconds_per_row"] for res in by_fold]))), models[name])
    return out


def rescore_best(results: dict[str, SearchResult], X: pd.DataFrame, y: pd.Series, *, cv: int, seed: int,
                 repeats: int, scoring: str, client: Client, rows: RowsOnCluster | None = None,
                 keep_models: bool = False) -> int:
    """Score each family's best candidate again on fresh K-fold splits (seeds ``seed + 1``, ``seed +
    2``, ... up to ``repeats - 1`` of them); its out-of-fold scores and per-fold scorer values go to
    ``rescored_oof`` and ``rescored_scores``. Repeats a family already has (a reused search) are
    kept; returns how many were added. With ``keep_models``, the first fresh repeat's k fitted fold
    pipelines stay on the workers as ``fold_models`` (futures): the bagged members
    (``model.bagging``) and the models whose out-of-fold scores the calibration is fitted on.

    A family's search score is the best of its grid on the search's own folds, so it is biased
    upward, the more so the larger or noisier the grid (the winner's curse): a single decision
    tree that happens to suit those five folds outranks a boosted model that is better on any
    others. Folds that chose nothing carry no such bias; :func:`churn.modeling.calibrate.choose_champion`
    ranks the families and builds the stack on every repeat. The candidate is the search's refit
    pipeline, cloned (so unfitted, with its best parameters). Families without out-of-fold scores
    are left alone.
    """
    usable = {f: res for f, res in results.items() if res.oof_proba is not None}
    have = 1 + min((len(res.rescored_oof) for res in usable.values()), default=0)
    for r in range(have, repeats):
        todo = {f: clone(res.best_estimator) for f, res in usable.items() if len(res.rescored_oof) == r - 1}
        log.info("rescoring the best candidate of %s on fresh %d-fold splits (repeat %d), for the champion choice",
                 ", ".join(todo), cv, r + 1)
        if keep_models and r == 1:
            kept = fold_models_on_cluster(todo, X, y, cv=folds(cv, seed, r), scoring=scoring, client=client,
                                          rows=rows)
            got = {f: res for f, (res, _) in kept.items()}
            for f, (res, models) in kept.items():
                usable[f].fold_models, usable[f].predict_seconds = models, res.predict_seconds
        else:
            got = fold_scores_on_cluster(todo, X, y, cv=folds(cv, seed, r), scoring=scoring, client=client,
                                         rows=rows)
        for f, res in got.items():
            if res.oof is not None:
                usable[f].rescored_oof.append(res.oof)
                usable[f].rescored_scores.append(res.scores)
    return max(repeats - have, 0)


def refit_fold_models(results: dict[str, SearchResult], families: list[str], X: pd.DataFrame, y: pd.Series, *,
                      cv: int, seed: int, scoring: str, client: Client, rows: RowsOnCluster | None = None) -> None:
    """Fit again the first fresh repeat's fold models of ``families`` (a reused search whose cache
    did not keep them), and make ``rescored_oof[0]`` and ``rescored_scores[0]`` theirs: the fits
    are seeded, so they are the scores the champion was chosen on, and the calibration is fitted
    on the served models' own scores either way."""
    todo = {f: clone(results[f].best_estimator) for f in families}
    log.info("fitting the fold models of %s again (the search cache did not keep them)", ", ".join(todo))
    got = fold_models_on_cluster(todo, X, y, cv=folds(cv, seed, 1), scoring=scoring, client=client, rows=rows)
    for f, (res, models) in got.items():
        if not np.allclose(res.oof, results[f].rescored_oof[0], rtol=0, atol=1e-9):
            log.warning("%s: the refitted fold models score differently from the cached repeat", f)
        results[f].rescored_oof[0], results[f].rescored_scores[0], results[f].fold_models = res.oof, res.scores, models
        results[f].predict_seconds = res.predict_seconds


def gather_fold_models(results: dict[str, SearchResult], families: list[str], client: Client | None) -> None:
    """Bring ``families``' fold models from the workers (futures become fitted pipelines) and drop
    every other family's, so the workers free them."""
    for f, res in results.items():
        if f not in families:
            res.fold_models = []
        elif res.fold_models and isinstance(res.fold_models[0], Future):
            res.fold_models = client.gather(res.fold_models)


def churn_grid_search(pipeline: ImbPipeline, grid: dict[str, list[Any]], X: pd.DataFrame, y: pd.Series, *,
                      cv: StratifiedKFold, scoring: str, client: Client) -> SearchResult:
    """The exact, work-sharing grid search described in the module docstring, for one family."""
    return churn_grid_searches({"": (pipeline, grid)}, X, y, cv=cv, scoring=scoring, client=client)[""]


SKLEARN_ATTEMPTS = 3  # runs of a joblib search that lost its data with a worker


def sklearn_search(pipeline: ImbPipeline, grid: dict[str, list[Any]], X: pd.DataFrame, y: pd.Series, *,
                   cv: StratifiedKFold, scoring: str, client: Client | None, halving: bool = False,
                   seed: int = 0) -> SearchResult:
    """scikit-learn's (halving) grid search with every fit running on ``client``'s workers.

    GridSearchCV keeps no out-of-fold predictions, so the best candidate is fitted once more
    per fold (``cross_val_predict`` on the same folds) to get them: the decision threshold is
    then chosen on rows the model was not fitted on, as with the churn engine.
    """
    if halving:
        from sklearn.experimental import enable_halving_search_cv  # noqa: F401
        from sklearn.model_selection import HalvingGridSearchCV

        search: Any = HalvingGridSearchCV(pipeline, grid, cv=cv, scoring=scoring, n_jobs=-1, refit=True,
                                          random_state=seed, error_score="raise")
    else:
        search = GridSearchCV(pipeline, grid, cv=cv, scoring=scoring, n_jobs=-1, refit=True, error_score="raise")
    t0 = time.perf_counter()

    def fit() -> np.ndarray:
        backend = (joblib.parallel_backend("dask", client=client, scatter=[X, y]) if client is not None
                   else contextlib.nullcontext())
        with backend:
            search.fit(X, y)
            best = clone(pipeline).set_params(**search.best_params_)
            if hasattr(best, "predict_proba"):
                return cross_val_predict(best, X, y, cv=cv, method="predict_proba", n_jobs=-1)[:, 1]
            return cross_val_predict(best, X, y, cv=cv, method="decision_function", n_jobs=-1)

    # joblib scatters each large argument (an estimator, a fold's indices) to one worker only; when
    # that worker dies the data is gone and the batches that need it are cancelled, so the search
    # (deterministic: same folds, same seeds) is run again on the workers that remain
    for attempt in range(1, SKLEARN_ATTEMPTS + 1):
        try:
            oof = fit()
            break
        except (FutureCancelledError, CommClosedError) as exc:
            if attempt == SKLEARN_ATTEMPTS or client is None or getattr(exc, "reason", None) == "no-workers":
                raise
            log.warning("grid search lost data with a worker (%s); running it again", exc)
    results = pd.DataFrame(search.cv_results_).assign(fit_time_apportioned=False)
    n_splits = cv.get_n_splits()
    n_fits = (len(results) if not halving else int(sum(search.n_candidates_))) * n_splits + n_splits
    task_seconds = float(((results["mean_fit_time"] + results["mean_score_time"]) * n_splits).sum())
    return SearchResult(search.best_estimator_, dict(search.best_params_), float(search.best_score_), results,
                        time.perf_counter() - t0, len(results), n_fits=n_fits, oof_proba=oof,
                        task_seconds=task_seconds, std_score=float(results["std_test_score"][search.best_index_]),
                        best_index=int(search.best_index_))


def grid_search(pipeline: ImbPipeline, grid: dict[str, list[Any]], X: pd.DataFrame, y: pd.Series, *, cv: int,
                scoring: str, seed: int, client: Client | None, engine: str = "churn",
                strategy: str = "grid") -> SearchResult:
    """Search ``grid`` for ``pipeline`` with ``cv``-fold stratified CV; see the module docstring."""
    return search_families({"": (pipeline, grid)}, X, y, cv=cv, scoring=scoring, seed=seed, client=client,
                           engine=engine, strategy=strategy)[""]


def search_families(searches: dict[str, tuple[ImbPipeline, dict[str, list[Any]]]], X: pd.DataFrame, y: pd.Series,
                    *, cv: int, scoring: str, seed: int, client: Client | None, engine: str = "churn",
                    strategy: str = "grid", progress: Progress | None = None,
                    rows: RowsOnCluster | None = None, checkpoints: FitCheckpoints | None = None
                    ) -> dict[str, SearchResult]:
    """Search each family's grid with ``cv``-fold stratified CV on the same folds: with the churn
    engine all families in one task graph (on ``rows`` when they were sent already), each fit kept
    by ``checkpoints`` as it ends and the fits it kept before not run again; scikit-learn's
    searches one after another (not checkpointed)."""
    splitter = folds(cv, seed)
    y = pd.Series(np.asarray(y).astype(int), index=X.index, name="label")
    if strategy == "halving" or engine == "sklearn" or client is None:
        out = {}
        for name, (pipeline, grid) in searches.items():
            if progress is not None:
                progress(name, 0, 1)
            out[name] = sklearn_search(pipeline, grid, X, y, cv=splitter, scoring=scoring, client=client,
                                       halving=strategy == "halving", seed=seed)
            if progress is not None:
                progress(name, 1, 1)
    else:
        out = churn_grid_searches(searches, X, y, cv=splitter, scoring=scoring, client=client, progress=progress,
                                  rows=rows, checkpoints=checkpoints)
    for name, result in out.items():
        restored = f", {result.fits_restored} restored from checkpoints" if result.fits_restored else ""
        log.info("search%s: %d candidates x %d folds (%d fits%s) done at %.1fs; best %s %.4f",
                 f" {name}" if name else "", result.n_candidates, cv, result.n_fits, restored, result.seconds,
                 scoring, result.best_score)
    return out
