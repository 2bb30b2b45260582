"""Worker utilisation of the default job's search: families one after another (as before) against
all families in one task graph, on the same LocalCluster and the same rows, in one run.

    python -m bench.utilisation

utilisation = busy time / (worker threads x wall time), busy time being the summed compute time
of every task the search ran (from distributed's task stream). Writes bench/results/utilisation.md.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from distributed import get_task_stream

from bench.common import bench_logging, write_table
from churn.clusters import cluster_client
from churn.clusters.info import workers as cluster_workers
from churn.config import LocalClusterSpec, load_job
from churn.data.columns import LABEL_COLUMN, SPLIT_COLUMN
from churn.data.ingest import ingest
from churn.data.split import load_splits, search_sample
from churn.jobs.train import _search_families
from churn.modeling.pipeline import build_pipeline, grid_for
from churn.modeling.search import grid_search

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench" / "utilisation"


def one_by_one(job: Any, X: Any, y: Any, client: Any) -> dict[str, Any]:
    """The search as it was: each family's grid search on its own, waiting for its refit."""
    return {fam: grid_search(build_pipeline(job.table, fam, job.model.imbalance, job.seed, job.model.row_cap(fam)),
                             grid_for(fam, job.model.grids.get(fam), job.model.selection, job.model.imbalance),
                             X, y, cv=job.search.cv, scoring=job.search.scoring, seed=job.seed, client=client)
            for fam in job.model.families}


def measured(search: Any, client: Any, threads: int) -> tuple[float, float, dict[str, Any]]:
    """(wall s, busy s, results) of one search run."""
    with get_task_stream(client) as stream:
        t0 = time.perf_counter()
        out = search()
        wall = time.perf_counter() - t0
    busy = sum(ss["stop"] - ss["start"] for t in stream.data for ss in t["startstops"] if ss["action"] == "compute")
    return wall, busy, out


def main() -> None:
    bench_logging()
    job = load_job(ROOT / "jobs" / "train.yaml", [f"data.output={WORK / 'datasets'}"])
    spec = LocalClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="4GiB", dashboard_address=None)
    with cluster_client(spec) as client:
        threads = sum(w["nthreads"] for w in cluster_workers(client).values())
        ds = ingest(job, client)
        ddf = load_splits(str(ds.data_path), job.split.resolved(ds.manifest.rows_kept, job.search.max_rows), job.seed)
        train, _ = search_sample(ddf[ddf[SPLIT_COLUMN] == "train"], job.search.max_rows, job.seed, client)
        X, y = train[job.table.features], train[LABEL_COLUMN].astype(int)
        one_by_one(job.model_copy(update={"model": job.model.model_copy(update={"families": ["logistic_regression"]})}),
                   X, y, client)  # warm-up: imports and first calls on the workers
        runs = {"families one after another (before)": measured(lambda: one_by_one(job, X, y, client), client,
                                                                 threads),
                "all families in one task graph (after)": measured(lambda: _search_families(job, X, y, client),
                                                                    client, threads)}
    (_, _, before), (_, _, after) = runs.values()
    same = all(before[f].best_params == after[f].best_params and before[f].best_score == after[f].best_score
               for f in job.model.families)
    rows = [[name, f"{wall:.1f}", f"{busy:.1f}", f"{busy / (threads * wall):.0%}"]
            for name, (wall, busy, _) in runs.items()]
    write_table("utilisation", f"Worker utilisation of the default job's search ({len(X):,} rows, "
                               f"{len(job.model.families)} families, {job.search.cv}-fold CV)",
                ["search", "wall s", "busy s", "utilisation"], rows, [
                    f"LocalCluster of {threads} worker threads (2 workers x 1 thread); the same rows, grids and "
                    "folds for both, in one run, after a warm-up search.",
                    "busy s = summed compute time of every task (fold preparations, fits, refits) from "
                    "distributed's task stream; utilisation = busy s / (worker threads x wall s).",
                    f"Same best parameters and CV scores in both: {'yes' if same else 'NO'}.",
                ])


if __name__ == "__main__":
    main()
