"""The train job: ingest → split → search → evaluate → track. Wiring only; logic lives in
the stage modules."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import mlflow
import pandas as pd
from distributed import Client

from churn.config import JobSpec
from churn.evaluate import Evaluation, evaluate, score_on_cluster
from churn.ingest import Dataset, ingest
from churn.model import build_pipeline, grid_for
from churn.search import SearchResult, grid_search
from churn.split import SPLIT_COLUMN, with_split
from churn.tracking import ensure_experiment, log_model, resolve_uri, set_alias
from churn.validate import KEY_COLUMN, LABEL_COLUMN

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a train run produced, for the CLI summary and for tests."""

    run_id: str
    tracking_uri: str
    model_uri: str
    model_version: str
    dataset: Dataset
    search: SearchResult
    test: Evaluation
    rows: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)


def load_splits(dataset: Dataset, job: JobSpec) -> dd.DataFrame:
    """The clean dataset as a Dask dataframe with its ``_split`` column (per partition)."""
    ddf = dd.read_parquet(str(dataset.data_path))
    return ddf.map_partitions(with_split, job.split, job.seed)


def search_sample(train: dd.DataFrame, job: JobSpec, client: Client) -> tuple[pd.DataFrame, int]:
    """Training rows for the grid search: all of them, or a stratified sample of ``max_rows``.

    Returns (rows, number of training rows). The sample keeps the class ratio: per class the
    ``k_c`` rows with the smallest per-key hash are taken, so it is deterministic.
    """
    counts = client.compute(train[LABEL_COLUMN].value_counts()).result()
    total = int(counts.sum())
    if total <= job.search.max_rows:
        return client.compute(train).result().reset_index(drop=True), total
    from churn.split import uniform_from_keys

    quota = {int(c): max(1, round(job.search.max_rows * n / total)) for c, n in counts.items()}
    # per class, rows whose hash is below a threshold with margin; exact cut in the driver
    margin = {c: min(1.0, 1.2 * q / int(counts[c]) + 1e-4) for c, q in quota.items()}

    def _pre(frame: pd.DataFrame) -> pd.DataFrame:
        u = uniform_from_keys(frame[KEY_COLUMN].to_numpy(), job.seed, salt=1)
        cut = frame[LABEL_COLUMN].map(margin).to_numpy(float)
        return frame.assign(_u=u).loc[u < cut]

    pre = client.compute(train.map_partitions(_pre)).result()
    parts = [g.nsmallest(quota[int(c)], "_u") for c, g in pre.groupby(LABEL_COLUMN)]
    sample = pd.concat(parts).sort_values(KEY_COLUMN, kind="stable").drop(columns="_u")
    return sample.reset_index(drop=True), total


def input_example(train: pd.DataFrame, job: JobSpec, n: int = 5) -> pd.DataFrame:
    """A few complete feature rows typed as a caller sends them (integer columns as int64)."""
    example = train[job.table.features].dropna().head(n).reset_index(drop=True)
    for col, rule in job.table.numeric.items():
        if rule.integer and not rule.nullable:
            example[col] = example[col].astype("int64")
    for col in job.table.categorical:
        example[col] = example[col].astype(object)
    return example


def run(job: JobSpec, client: Client, job_file: str | None = None) -> TrainResult:
    """Run the whole train job on ``client``'s cluster; log it all to MLflow."""
    schema = job.table
    features = schema.features
    seconds: dict[str, float] = {}

    t = time.perf_counter()
    log.info("stage 1/5 ingest: %s", job.data.source)
    dataset = ingest(job, client)
    seconds["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("stage 2/5 split: test %.0f%%, validation %.0f%%, seed %d", 100 * job.split.test,
             100 * job.split.validation, job.seed)
    ddf = load_splits(dataset, job)
    train_ddf = ddf[ddf[SPLIT_COLUMN] == "train"]
    test_ddf = ddf[ddf[SPLIT_COLUMN] == "test"]
    train, n_train = search_sample(train_ddf, job, client)
    rows = {"train": n_train, "search": len(train)}
    seconds["split"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("stage 3/5 search: %s, %s, cv=%d on %d rows", job.model.family, job.model.imbalance,
             job.search.cv, len(train))
    pipeline = build_pipeline(schema, job.model.family, job.model.imbalance, job.seed)
    grid = grid_for(job.model.family, job.model.grid)
    result = grid_search(pipeline, grid, train[features], train[LABEL_COLUMN].astype(int), cv=job.search.cv,
                         scoring=job.search.scoring, seed=job.seed, client=client)
    seconds["search"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("stage 4/5 evaluate on the test split")
    y, p = score_on_cluster(test_ddf, result.best_estimator, features, client)
    rows["test"] = len(y)
    test = evaluate(y, p)
    seconds["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    uri = resolve_uri(job.tracking)
    log.info("stage 5/5 track: %s (experiment %s)", uri, job.tracking.experiment)
    exp_id = ensure_experiment(uri, job.tracking.experiment)
    example = input_example(train, job)
    with mlflow.start_run(experiment_id=exp_id, run_name=job.name) as run:
        _log_run(job, job_file, dataset, result, test, rows, grid)
        info = log_model(result.best_estimator, example, test.metrics["threshold"],
                         job.tracking.registered_model)
        version = str(info.registered_model_version)
        set_alias(job.tracking.registered_model, job.tracking.alias, version)
        seconds["track"] = time.perf_counter() - t
        mlflow.log_metrics({f"seconds_{k}": v for k, v in seconds.items()})
    return TrainResult(run.info.run_id, uri, f"models:/{job.tracking.registered_model}@{job.tracking.alias}",
                       version, dataset, result, test, rows, seconds)


def _log_run(job: JobSpec, job_file: str | None, dataset: Dataset, result: SearchResult, test: Evaluation,
             rows: dict[str, int], grid: dict[str, list[Any]]) -> None:
    mlflow.set_tags({"family": job.model.family, "imbalance": job.model.imbalance,
                     "dataset": dataset.manifest["dataset"]})
    mlflow.log_params({"family": job.model.family, "imbalance": job.model.imbalance, "seed": job.seed,
                       "cv": job.search.cv, "scoring": job.search.scoring, "test_fraction": job.split.test,
                       "validation_fraction": job.split.validation,
                       "grid": json.dumps({k: [str(v) for v in vs] for k, vs in grid.items()})})
    mlflow.log_params({f"best_{k.removeprefix('model__')}": v for k, v in result.best_params.items()})
    mlflow.log_metrics({
        f"cv_{job.search.scoring}": result.best_score,
        "search_seconds": result.seconds,
        "search_rows": rows["search"],
        "train_rows": rows["train"],
        "search_sample_fraction": rows["search"] / max(rows["train"], 1),
        "test_rows": rows["test"],
        "rows_read": dataset.manifest["rows_read"],
        "rows_kept": dataset.manifest["rows_kept"],
        "rows_quarantined": dataset.manifest["rows_quarantined"],
        "duplicates_removed": dataset.manifest["duplicates_removed"],
    })
    mlflow.log_metrics({f"test_{k}": v for k, v in test.metrics.items()})
    mlflow.log_dict(job.as_dict(), "job/job.yaml")
    if job_file:
        mlflow.log_artifact(job_file, "job")
    mlflow.log_dict(dataset.manifest, "data/manifest.json")
    mlflow.log_text(test.report, "evaluation/classification_report.txt")
    mlflow.log_dict({"labels": ["stay", "churn"], "matrix": test.confusion}, "evaluation/confusion_matrix.json")
    with tempfile.TemporaryDirectory() as tmp:
        cv_path = Path(tmp) / "cv_results.csv"
        result.cv_results.to_csv(cv_path, index=False)
        mlflow.log_artifact(str(cv_path), "search")
        lift_path = Path(tmp) / "lift_by_decile.csv"
        test.lift.to_csv(lift_path, index=False)
        mlflow.log_artifact(str(lift_path), "evaluation")


