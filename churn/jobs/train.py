"""The train job: ingest → split → search → threshold → evaluate → track. Wiring only: the
logic lives in :mod:`churn.data`, :mod:`churn.modeling` and :mod:`churn.tracking`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from distributed import Client
from sklearn.pipeline import Pipeline

from churn.config import JobSpec, setting
from churn.config.families import imbalance_used
from churn.data.columns import LABEL_COLUMN, SPLIT_COLUMN
from churn.data.ingest import Dataset, check_headers, check_output_folder, ingest
from churn.data.split import check_counts, class_counts, load_splits, sample_rows, search_sample
from churn.jobs.graph import to_mermaid, train_graph
from churn.modeling.evaluate import (
    Evaluation,
    Threshold,
    choose_threshold,
    evaluate,
    permutation_table,
    score_on_cluster,
)
from churn.modeling.pipeline import build_pipeline, grid_for, inference_pipeline, kept_features
from churn.modeling.preflight import check_grids, check_round_trip
from churn.modeling.search import SearchResult, grid_search
from churn.tracking.registry import input_example, log_model, set_alias
from churn.tracking.run_log import (
    log_champion,
    log_family,
    log_graph,
    log_plots,
    log_seconds,
    parent_run,
    set_stage,
)
from churn.tracking.store import check_store, resolve_uri

log = logging.getLogger(__name__)

STAGES = ("ingest", "split", "search", "threshold", "evaluate", "track")


@dataclass
class TrainResult:
    """What a train run produced, for the CLI summary and for tests."""

    run_id: str
    tracking_uri: str
    model_uri: str
    model_version: str
    dataset: Dataset
    families: dict[str, SearchResult]
    champion: str
    threshold: Threshold
    test: Evaluation
    rows: dict[str, int]
    kept_features: list[str]
    model: Pipeline  # the registered inference pipeline (no sampler)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def search(self) -> SearchResult:
        """The champion family's search."""
        return self.families[self.champion]


def preflight(job: JobSpec) -> str:
    """Every check that needs no cluster, before one starts; returns the tracking URI."""
    check_headers(job.data.paths(), job.table, job.data.encoding)
    check_output_folder(job)
    check_grids(job)
    uri = resolve_uri(job.tracking)
    check_store(uri)
    return uri


@contextmanager
def _stage(name: str, seconds: dict[str, float], detail: str = "") -> Iterator[None]:
    log.info("stage %d/%d %s%s", STAGES.index(name) + 1, len(STAGES), name, f": {detail}" if detail else "")
    set_stage(name)
    t = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t


def run(job: JobSpec, client: Client, job_file: str | None = None) -> TrainResult:
    """Run the whole train job on ``client``'s cluster; log it all to one MLflow run."""
    schema, features = job.table, job.table.features
    seconds: dict[str, float] = {}
    uri = resolve_uri(job.tracking)
    with parent_run(uri, job, job_file) as parent:
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
            check_round_trip(job, X, y, int(setting("preflight.round-trip-rows")))

        families: dict[str, SearchResult] = {}
        with _stage("search", seconds, f"{len(job.model.families)} families, cv={job.search.cv}, {len(train):,} rows"):
            for i, fam in enumerate(job.model.families, 1):
                log.info("search %d/%d: %s (%s)", i, len(job.model.families), fam,
                         imbalance_used(fam, job.model.imbalance))
                families[fam] = grid_search(
                    build_pipeline(schema, fam, job.model.imbalance, job.seed),
                    grid_for(fam, job.model.grids.get(fam), job.model.selection), X, y, cv=job.search.cv,
                    scoring=job.search.scoring, seed=job.seed, client=client, engine=job.search.engine,
                    strategy=job.search.strategy)
        champion = max(families, key=lambda f: families[f].best_score)  # first family wins ties
        best = families[champion]

        with _stage("threshold", seconds, f"champion {champion} (CV {job.search.scoring} {best.best_score:.4f})"):
            threshold = choose_threshold(y.to_numpy(), best.oof_proba, job.evaluation.economics)

        with _stage("evaluate", seconds, f"test split, threshold {threshold.value:.3f} from {threshold.source}"):
            model = inference_pipeline(best.best_estimator)
            y_test, p_test = score_on_cluster(test_ddf, model, features, client)
            rows["test"] = len(y_test)
            test = evaluate(y_test, p_test, threshold.value, economics=job.evaluation.economics,
                            top_k=job.evaluation.top_k, f1_cut=threshold.f1)
            kept = kept_features(model)

        with _stage("track", seconds, f"{uri} (experiment {job.tracking.experiment})"):
            for fam, res in families.items():
                log_family(job, fam, res)
            log_champion(job, dataset.manifest, families, champion, test, rows, threshold, kept)
            if job.evaluation.plots:
                sample = sample_rows(test_ddf, rows["test"], job.evaluation.permutation_rows, job.seed, client)
                log_plots(job, families, test, permutation_table(model, sample, features, job.seed, client))
            info = log_model(model, input_example(train, schema), threshold.value, job.tracking.registered_model,
                             schema)
            version = str(info.registered_model_version)
            set_alias(job.tracking.registered_model, job.tracking.alias, version)
        log_seconds(seconds)
        result = TrainResult(parent.info.run_id, uri, f"models:/{job.tracking.registered_model}@{job.tracking.alias}",
                             version, dataset, families, champion, threshold, test, rows, kept, model, seconds)
        graph = train_graph(job, result)
        log_graph(to_mermaid(graph), [[graph.nodes[n] for n in rank] for rank in graph.ranks],
                  f"churn train: {job.name}")
        set_stage("done")
    return result

