"""The train job: ingest → split → search → calibrate → evaluate → finalize → track. Wiring only: the
logic lives in :mod:`churn.data`, :mod:`churn.modeling` and :mod:`churn.tracking`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from distributed import Client
from distributed.scheduler import KilledWorker

from churn.clusters import ClusterError
from churn.config import JobSpec, setting
from churn.config.families import imbalance_used
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN, SPLIT_COLUMN
from churn.data.ingest import Dataset, check_headers, check_output_folder, ingest
from churn.data.publish import release
from churn.data.split import check_counts, class_counts, load_splits, sample_rows, search_sample
from churn.jobs.graph import to_mermaid, train_graph
from churn.modeling.calibrate import Champion, assemble, choose_champion
from churn.modeling.evaluate import (
    Evaluation,
    Threshold,
    choose_threshold,
    evaluate,
    member_scores_on_cluster,
    permutation_table,
)
from churn.modeling.pipeline import build_pipeline, grid_for, imbalance_of, inference_pipeline, kept_features
from churn.modeling.preflight import check_grids, round_trip_once
from churn.modeling.screen import SumsChoice, choose_sums, sums_in
from churn.modeling.search import (
    Progress,
    RowsOnCluster,
    SearchResult,
    folds,
    refit_best,
    rescore_best,
    search_families,
)
from churn.modeling.search_cache import SearchCache, search_key
from churn.monitoring.batch import reference_profile
from churn.serving.calibration import ChurnClassifier
from churn.tracking.names import check_experiment, check_names
from churn.tracking.promotion import (
    Gate,
    Promotion,
    check_settings,
    gate_score,
    model_fingerprint,
    owner_check,
    promote,
    test_rows_id,
    version_score,
)
from churn.tracking.registry import input_example, log_model, serving_rules
from churn.tracking.run_log import (
    log_champion,
    log_family,
    log_feature_sums,
    log_graph,
    log_plots,
    log_seconds,
    mark_search_reused,
    parent_run,
    set_stage,
)
from churn.tracking.run_state import claim_run
from churn.tracking.store import check_store, resolve_uri

log = logging.getLogger(__name__)

STAGES = ("ingest", "split", "preflight", "search", "calibrate", "evaluate", "finalize", "track")


@dataclass
class TrainResult:
    """What a train run produced, for the CLI summary and for tests."""

    run_id: str
    tracking_uri: str
    model_uri: str
    model_version: str
    dataset: Dataset
    families: dict[str, SearchResult]
    champion: Champion
    threshold: Threshold
    test: Evaluation  # of the model before finalising (fitted on the search rows only)
    rows: dict[str, int]
    kept_features: list[str]
    model: ChurnClassifier  # the registered model (finalised unless model.finalize is off)
    seconds: dict[str, float] = field(default_factory=dict)
    feature_sums: dict[str, list[str]] = field(default_factory=dict)  # the sums every searched pipeline adds
    promotion: Promotion | None = None  # what the gate did with the version, and the alias it holds
    preflight_reused: bool = False  # the round-trip preflight passed before for the same data, spec and code

    @property
    def search(self) -> SearchResult:
        """The search of the champion's best family."""
        return self.families[self.champion.members[0]]


def preflight(job: JobSpec) -> str:
    """Every check that needs no cluster, before one starts; returns the tracking URI."""
    check_headers(job.data.paths(), job.table, job.data.encoding)
    check_output_folder(job)
    check_grids(job)
    check_settings(job.tracking.alias)
    uri = resolve_uri(job.tracking)
    check_store(uri)
    check_names(job.tracking)
    check_experiment(uri, job.tracking.experiment)
    return uri


@contextmanager
def _stage(name: str, seconds: dict[str, float], detail: str = "") -> Iterator[None]:
    log.info("stage %d/%d %s%s", STAGES.index(name) + 1, len(STAGES), name, f": {detail}" if detail else "")
    set_stage(name)
    t = time.perf_counter()
    try:
        yield
    except KilledWorker as exc:  # a task (not a block: those are named by map_blocks) kept killing workers
        raise ClusterError(f"stage {name}: task {exc.task!r} killed every worker that ran it "
                           f"({exc.allowed_failures + 1} attempts); the worker logs say why") from None
    seconds[name] = time.perf_counter() - t


def _search_families(job: JobSpec, X: pd.DataFrame, y: pd.Series, client: Client, rows: RowsOnCluster | None,
                     progress: Progress | None = None) -> tuple[dict[str, SearchResult], SumsChoice]:
    sums = choose_sums(job, X, y, client, rows)
    searches = {}
    for fam in job.model.families:
        cap = job.model.row_cap(fam)
        capped = f", fits on at most {cap:,} of {len(X):,} rows" if cap and cap < len(X) else ""
        log.info("search %s (imbalance %s%s)", fam, imbalance_used(fam, job.model.imbalance), capped)
        searches[fam] = (build_pipeline(job.table, fam, job.model.imbalance, job.seed, cap, sums.groups),
                         grid_for(fam, job.model.grids.get(fam), job.model.selection, job.model.imbalance))
    families = search_families(searches, X, y, cv=job.search.cv, scoring=job.search.scoring, seed=job.seed,
                               client=client, engine=job.search.engine, strategy=job.search.strategy,
                               progress=progress, rows=rows)
    for fam, res in families.items():
        cap = job.model.row_cap(fam)
        res.imbalance = imbalance_of(res.best_params, fam, job.model.imbalance)
        res.rows_per_fit = min(cap, len(X)) if cap else len(X)
    return families, sums


def run(job: JobSpec, client: Client, job_file: str | None = None, run_id: str | None = None,
        progress: Progress | None = None, force_promote: bool = False) -> TrainResult:
    """Run the whole train job on ``client``'s cluster; log it all to one MLflow run (``run_id``:
    resume that run, made by ``churn submit``; ``progress``: told after each finished fit;
    ``force_promote``: the new version becomes ``@champion`` whatever the promotion gate says)."""
    schema, features = job.table, job.table.features
    seconds: dict[str, float] = {}
    uri = resolve_uri(job.tracking)
    with parent_run(uri, job, job_file, run_id) as parent:
        token = claim_run(uri, parent.info.run_id)  # checked again before registering and moving aliases
        with _stage("ingest", seconds, job.data.source):
            dataset = ingest(job, client)

        with _stage("split", seconds, f"test {job.split.test:.0%}, validation {job.split.validation:.0%}, "
                                      f"seed {job.seed}"):
            ddf = load_splits(str(dataset.data_path), job.split, job.seed)
            counts = class_counts(ddf, client)
            check_counts(counts, cv=job.search.cv, max_rows=job.search.max_rows, positive=schema.positive,
                         negative=schema.negative)
            test_ddf = ddf[ddf[SPLIT_COLUMN] == "test"]
            train, n_train = search_sample(ddf[ddf[SPLIT_COLUMN] == "train"], job.search.max_rows, job.seed,
                                           client, counts=counts["train"])
            rows = {"train": n_train, "search": len(train)}
            X, y = train[features], train[LABEL_COLUMN].astype(int)

        with _stage("preflight", seconds, "each family's model saved and loaded back as registered"):
            key = search_key(job, dataset.manifest.dataset, len(train))
            reused_preflight = round_trip_once(job, X, y, int(setting("preflight.round-trip-rows")), key)
            if reused_preflight:
                log.info("preflight: data, spec and code unchanged: the round trip passed before")

        with _stage("search", seconds, f"{len(job.model.families)} families, cv={job.search.cv}, {len(train):,} rows"):
            # the search rows go to the workers once, for the sums screen, the search and the rescoring
            on_cluster = RowsOnCluster(X, y, client) if client is not None else None
            cache = SearchCache(Path(job.data.output) / "search-cache", key)
            families = cache.load(job.model.families) if job.search.reuse else None
            if families is not None:
                log.info("search: data, spec and code unchanged: reusing the search in %s", cache.folder)
                mark_search_reused(cache.key)
                sums = sums_in(families, job)
            else:
                families, sums = _search_families(job, X, y, client, on_cluster, progress)
                cache.save(families)
            # after the save, so a failure here keeps the search; a reused search gets only missing repeats
            if client is not None and rescore_best(families, X, y, cv=job.search.cv, seed=job.seed,
                                                   repeats=job.search.repeats, scoring=job.search.scoring,
                                                   client=client, rows=on_cluster):
                cache.save(families)
            log_feature_sums(sums)

        with _stage("calibrate", seconds, f"stack of up to {job.model.ensemble}, calibration "
                                          f"{job.model.calibration}, threshold on out-of-fold"):
            repeats = [list(folds(job.search.cv, job.seed, r).split(X, y)) for r in range(job.search.repeats)]
            champion = choose_champion(families, y.to_numpy(), repeats, job.search.scoring, job.model.ensemble,
                                       job.model.calibration)
            threshold = choose_threshold(y.to_numpy(), champion.oof_proba, job.evaluation.economics)
            fitted = [inference_pipeline(families[f].best_estimator) for f in champion.members]
            model = assemble(fitted, champion.calibration, champion.members)
            log.info("champion %s (CV %s %.4f ± %.4f), calibration %s, threshold %.3f", champion.name,
                     job.search.scoring, champion.cv_score, champion.cv_std, champion.calibration.method,
                     threshold.value)

        with _stage("evaluate", seconds, f"test split, threshold {threshold.value:.3f} from {threshold.source}"):
            # one pass over the test split: each member's raw score, then the calibration map here
            y_test, s_test = member_scores_on_cluster(test_ddf, model, features, client)
            p_test = model.calibrator.predict(s_test)
            rows["test"] = len(y_test)
            test = evaluate(y_test, p_test, threshold.value, economics=job.evaluation.economics,
                            top_k=job.evaluation.top_k, f1_cut=threshold.f1)
            kept = kept_features(fitted[0])
            # the best member's own probabilities, for the before/after calibration plot
            raw = s_test[:, 0] if families[champion.members[0]].proba_scores else None
            importance = None
            if job.evaluation.plots:
                sample = sample_rows(test_ddf, rows["test"], job.evaluation.permutation_rows, job.seed, client)
                importance = permutation_table(model, sample, features, job.seed, client)

        registered, rows["final"] = model, rows["search"]
        if job.model.finalize and rows["search"] == rows["train"]:
            with _stage("finalize", seconds, f"refit {', '.join(champion.members)} on train + test rows"):
                test_rows = test_ddf[[*features, LABEL_COLUMN]].compute()
                X_all = pd.concat([X, test_rows[features]])
                y_all = pd.concat([y, test_rows[LABEL_COLUMN].astype(int)])
                refits = refit_best([families[f] for f in champion.members], X_all, y_all, client)
                registered = assemble([inference_pipeline(r) for r in refits], champion.calibration,
                                      champion.members)
                rows["final"] = len(X_all)

        with _stage("track", seconds, f"{uri} (experiment {job.tracking.experiment})"):
            for fam, res in families.items():
                log_family(job, fam, res)
            log_champion(job, dataset.manifest, families, champion, test, rows, threshold, kept)
            if job.evaluation.plots:
                log_plots(job, families, test, importance, raw, champion.calibration.method)
            reference = reference_profile(ddf[ddf[SPLIT_COLUMN] == "train"], X, champion.oof_proba, y.to_numpy(),
                                          train[KEY_COLUMN].to_numpy(), schema, client)
            name, scoring = job.tracking.registered_model, job.search.scoring

            def register() -> str:
                info = log_model(registered, input_example(train, schema), threshold.value,
                                 job.tracking.registered_model, schema, reference)
                return str(info.registered_model_version)

            # the gate scores the champion on this run's test rows as the new model was scored above
            gate = Gate(name, job.tracking.alias, scoring, gate_score(scoring, y_test, p_test, threshold.value),
                        serving_rules(schema), lambda v: version_score(name, v, test_ddf, features, client, scoring),
                        test_rows=test_rows_id(dataset.manifest.dataset, job.split.test, job.split.validation,
                                               job.seed),
                        refit_on_test=rows["final"] > rows["search"])
            promotion = promote(gate, model_fingerprint(job, dataset.manifest.dataset, len(train)), register,
                                owner_check(uri, parent.info.run_id, token), force=force_promote)
            version = promotion.version
        log_seconds(seconds)
        result = TrainResult(parent.info.run_id, uri, f"models:/{job.tracking.registered_model}/{version}",
                             version, dataset, families, champion, threshold, test, rows, kept, registered, seconds,
                             feature_sums=sums.groups, promotion=promotion, preflight_reused=reused_preflight)
        graph = train_graph(job, result)
        log_graph(to_mermaid(graph), [[graph.nodes[n] for n in rank] for rank in graph.ranks],
                  f"churn train: {job.name}")
        set_stage("done")
    if dataset.version is not None:  # a long-lived process (a notebook) keeps no lock on it: cleanups may go on
        release(dataset.version)
    return result
