"""The train job: ingest → split → search → evaluate → track. Wiring only; logic lives in
the stage modules."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dask.dataframe as dd
import joblib
import mlflow
import numpy as np
import pandas as pd
from distributed import Client

from churn.config import JobSpec
from churn.evaluate import Evaluation, evaluate, f1_threshold, profit_threshold, score_on_cluster
from churn.ingest import Dataset, ingest
from churn.model import build_pipeline, grid_for, imbalance_used, kept_features
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
    families: dict[str, SearchResult]
    champion: str
    threshold: float
    threshold_source: str
    test: Evaluation
    rows: dict[str, int]
    kept_features: list[str]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def search(self) -> SearchResult:
        """The champion family's search."""
        return self.families[self.champion]


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
    log.info("stage 1/6 ingest: %s", job.data.source)
    dataset = ingest(job, client)
    seconds["ingest"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("stage 2/6 split: test %.0f%%, validation %.0f%%, seed %d", 100 * job.split.test,
             100 * job.split.validation, job.seed)
    ddf = load_splits(dataset, job)
    train_ddf = ddf[ddf[SPLIT_COLUMN] == "train"]
    test_ddf = ddf[ddf[SPLIT_COLUMN] == "test"]
    train, n_train = search_sample(train_ddf, job, client)
    rows = {"train": n_train, "search": len(train)}
    X, y = train[features], train[LABEL_COLUMN].astype(int)
    seconds["split"] = time.perf_counter() - t

    t = time.perf_counter()
    families: dict[str, SearchResult] = {}
    for i, fam in enumerate(job.model.families, 1):
        log.info("stage 3/6 search %d/%d: %s (%s), cv=%d on %d rows", i, len(job.model.families), fam,
                 imbalance_used(fam, job.model.imbalance), job.search.cv, len(train))
        pipeline = build_pipeline(schema, fam, job.model.imbalance, job.seed)
        grid = grid_for(fam, job.model.grids.get(fam), job.model.selection)
        families[fam] = grid_search(pipeline, grid, X, y, cv=job.search.cv, scoring=job.search.scoring,
                                    seed=job.seed, client=client, engine=job.search.engine,
                                    strategy=job.search.strategy)
    champion = max(families, key=lambda f: families[f].best_score)  # first family wins ties
    best = families[champion]
    seconds["search"] = time.perf_counter() - t

    t = time.perf_counter()
    log.info("stage 4/6 threshold: champion %s (CV %s %.4f)", champion, job.search.scoring, best.best_score)
    threshold, f1_cut, source = choose_threshold(job, best, y.to_numpy(), ddf, client)
    log.info("stage 5/6 evaluate on the test split (threshold %.3f from %s)", threshold, source)
    y_test, p_test = score_on_cluster(test_ddf, best.best_estimator, features, client)
    rows["test"] = len(y_test)
    test = evaluate(y_test, p_test, threshold, economics=job.evaluation.economics, top_k=job.evaluation.top_k,
                    f1_cut=f1_cut)
    kept = kept_features(best.best_estimator)
    seconds["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    uri = resolve_uri(job.tracking)
    log.info("stage 6/6 track: %s (experiment %s)", uri, job.tracking.experiment)
    exp_id = ensure_experiment(uri, job.tracking.experiment)
    example = input_example(train, job)
    with mlflow.start_run(experiment_id=exp_id, run_name=job.name) as parent:
        for fam, res in families.items():
            with mlflow.start_run(experiment_id=exp_id, run_name=fam, nested=True):
                _log_family(job, fam, res)
        _log_run(job, job_file, dataset, families, champion, test, rows, threshold, source, kept)
        if job.evaluation.plots:
            _log_plots(job, families, best, test, test_ddf, client)
        info = log_model(best.best_estimator, example, threshold, job.tracking.registered_model)
        version = str(info.registered_model_version)
        set_alias(job.tracking.registered_model, job.tracking.alias, version)
        seconds["track"] = time.perf_counter() - t
        mlflow.log_metrics({f"seconds_{k}": v for k, v in seconds.items()})
    return TrainResult(parent.info.run_id, uri, f"models:/{job.tracking.registered_model}@{job.tracking.alias}",
                       version, dataset, families, champion, threshold, source, test, rows, kept, seconds)


def choose_threshold(job: JobSpec, best: SearchResult, y_train: np.ndarray, ddf: dd.DataFrame,
                     client: Client) -> tuple[float, float, str]:
    """Profit-maximising and F1 thresholds, from rows the champion was not fitted on.

    Out-of-fold CV probabilities when the search kept them, else the validation split, else
    (no validation split, approximate search) the test split itself, which is then optimistic.
    """
    if best.oof_proba is not None and not np.isnan(best.oof_proba).any():
        yv, pv, source = y_train, best.oof_proba, "out-of-fold CV predictions"
    else:
        part = "validation" if job.split.validation > 0 else "test"
        yv, pv = score_on_cluster(ddf[ddf[SPLIT_COLUMN] == part], best.best_estimator, job.table.features, client)
        source = f"{part} split"
    threshold, _ = profit_threshold(yv, pv, job.evaluation.economics)
    return threshold, f1_threshold(yv, pv), source


def _log_family(job: JobSpec, fam: str, res: SearchResult) -> None:
    mlflow.set_tags({"family": fam, "imbalance": imbalance_used(fam, job.model.imbalance)})
    mlflow.log_params({f"best_{k.removeprefix('model__')}": v for k, v in res.best_params.items()})
    mlflow.log_metrics({f"cv_{job.search.scoring}": res.best_score, "search_seconds": res.seconds,
                        "candidates": res.n_candidates, "fits": res.n_fits})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cv_results.csv"
        res.cv_results.assign(params=res.cv_results["params"].astype(str)).to_csv(path, index=False)
        mlflow.log_artifact(str(path), "search")


def _log_plots(job: JobSpec, families: dict[str, SearchResult], best: SearchResult, test: Evaluation,
               test_ddf: dd.DataFrame, client: Client) -> None:
    from sklearn.inspection import permutation_importance

    from churn import plots

    m = test.metrics
    figures = {
        "roc.png": plots.roc(test.y_true, test.y_score, m["roc_auc"]),
        "precision_recall.png": plots.pr(test.y_true, test.y_score, m["pr_auc"]),
        "calibration.png": plots.calibration(test.y_true, test.y_score, m["brier"]),
        "lift_gains.png": plots.lift_gains(test.lift),
        "confusion_matrix.png": plots.confusion(test.confusion, m["threshold"]),
        "cv_score_by_family.png": plots.family_scores(
            {f: r.cv_results["mean_test_score"].to_numpy() for f, r in families.items()}, job.search.scoring),
    }
    sample = sample_rows(test_ddf, int(test.metrics["rows"]), job.evaluation.permutation_rows, job.seed, client)
    if len(sample) and sample[LABEL_COLUMN].nunique() == 2:
        features = job.table.features
        with joblib.parallel_backend("dask", client=client):
            imp = permutation_importance(best.best_estimator, sample[features], sample[LABEL_COLUMN].astype(int),
                                         scoring="roc_auc", n_repeats=5, random_state=job.seed, n_jobs=-1)
        figures["permutation_importance.png"] = plots.importance(features, imp.importances_mean,
                                                                 imp.importances_std)
        mlflow.log_dict({f: {"mean": float(a), "std": float(b)} for f, a, b in
                         zip(features, imp.importances_mean, imp.importances_std, strict=True)},
                        "evaluation/permutation_importance.json")
    import matplotlib.pyplot as plt

    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}")
        plt.close(fig)


def sample_rows(ddf: dd.DataFrame, total: int, n: int, seed: int, client: Client) -> pd.DataFrame:
    """About ``n`` of the ``total`` rows of ``ddf``, picked by key hash (deterministic), collected
    to the driver."""
    from churn.split import uniform_from_keys

    if total == 0:
        return ddf._meta
    frac = min(1.0, n / total)
    picked = ddf.map_partitions(lambda f: f.loc[uniform_from_keys(f[KEY_COLUMN].to_numpy(), seed, salt=2) < frac])
    return client.compute(picked).result().reset_index(drop=True)


def _log_run(job: JobSpec, job_file: str | None, dataset: Dataset, families: dict[str, SearchResult],
             champion: str, test: Evaluation, rows: dict[str, int], threshold: float, source: str,
             kept: list[str]) -> None:
    best = families[champion]
    mlflow.set_tags({"champion_family": champion, "imbalance": imbalance_used(champion, job.model.imbalance),
                     "dataset": dataset.manifest["dataset"], "threshold_source": source})
    mlflow.log_params({"families": ",".join(families), "champion_family": champion,
                       "imbalance": job.model.imbalance, "seed": job.seed, "cv": job.search.cv,
                       "scoring": job.search.scoring, "engine": job.search.engine,
                       "strategy": job.search.strategy, "test_fraction": job.split.test,
                       "validation_fraction": job.split.validation,
                       **{f"economics_{k}": v for k, v in job.evaluation.economics.model_dump().items()}})
    mlflow.log_params({f"best_{k.removeprefix('model__')}": v for k, v in best.best_params.items()})
    mlflow.log_metrics({
        f"cv_{job.search.scoring}": best.best_score,
        "search_rows": rows["search"],
        "train_rows": rows["train"],
        "search_sample_fraction": rows["search"] / max(rows["train"], 1),
        "test_rows": rows["test"],
        "rows_read": dataset.manifest["rows_read"],
        "rows_kept": dataset.manifest["rows_kept"],
        "rows_quarantined": dataset.manifest["rows_quarantined"],
        "duplicates_removed": dataset.manifest["duplicates_removed"],
        "decision_threshold": threshold,
        "features_kept": len(kept),
        **{f"cv_{job.search.scoring}_{f}": r.best_score for f, r in families.items()},
    })
    mlflow.log_metrics({f"test_{k}": v for k, v in test.metrics.items()})
    mlflow.log_dict(job.as_dict(), "job/job.yaml")
    if job_file:
        mlflow.log_artifact(job_file, "job")
    mlflow.log_dict(dataset.manifest, "data/manifest.json")
    mlflow.log_dict({"features": kept}, "model/kept_features.json")
    mlflow.log_text(test.report, "evaluation/classification_report.txt")
    mlflow.log_dict({"labels": ["stay", "churn"], "threshold": threshold, "matrix": test.confusion},
                    "evaluation/confusion_matrix.json")
    with tempfile.TemporaryDirectory() as tmp:
        lift_path = Path(tmp) / "lift_by_decile.csv"
        test.lift.to_csv(lift_path, index=False)
        mlflow.log_artifact(str(lift_path), "evaluation")
        cv_path = Path(tmp) / "cv_results.csv"
        best.cv_results.assign(params=best.cv_results["params"].astype(str)).to_csv(cv_path, index=False)
        mlflow.log_artifact(str(cv_path), "search")
