"""Fault scenarios on real `dask worker` processes, each with its outcome and how long recovery took.

    python -m bench.faults

Writes bench/results/faults.md. Scenarios (the tests assert the outcomes; this measures the cost):
  1. one of three worker process groups SIGKILLed 40 % into a grid search;
  2. the same during an ingest;
  3. a block whose task kills every worker that runs it (allowed-failures 3, the default);
  4. every worker killed during `churn train` (no-workers timeout 10 s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import bench_logging, write_table
from churn.clusters import cluster_client
from churn.config import load_job
from churn.data.generate import generate
from churn.data.ingest import ingest
from churn.data.partitions import PartitionKilledError
from churn.data.split import load_splits, search_sample
from churn.modeling.pipeline import build_pipeline, grid_for
from churn.modeling.search import grid_search
from tests.clusters.test_clusters import dask_processes
from tests.clusters.test_fault_tolerance import _DieOnBlock

ROOT = Path(__file__).resolve().parents[1]
TELCO = ROOT / "data" / "telco" / "Telco-Customer-Churn.csv"


def _job(tmp: Path, source: Path | str, *sets: str) -> Any:
    return load_job(ROOT / "jobs" / "train.yaml", [f"data.source={source}", f"data.output={tmp / 'ds'}",
                                                   f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", *sets])


def _killed_midway(work: Any, calm_seconds: float, victim: subprocess.Popen) -> tuple[Any, float]:
    """Run ``work`` in a thread, SIGKILL ``victim``'s process group 40 % in: (result, wall s)."""
    out: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: out.update(res=work()))
    t0 = time.monotonic()
    runner.start()
    time.sleep(0.4 * calm_seconds)
    os.killpg(victim.pid, signal.SIGKILL)
    runner.join()
    return out.get("res"), time.monotonic() - t0


def search_scenario(tmp: Path) -> list[str]:
    job = _job(tmp, TELCO)
    grid = grid_for("random_forest", {"n_estimators": [50], "min_samples_leaf": [1, 2, 4, 8]},
                    imbalance=["none", "class_weight", "smote"])
    with dask_processes(tmp, 3) as (address, workers), cluster_client(address=address) as client:
        client.wait_for_workers(3, timeout=60)
        ds = ingest(job, client)
        ddf = load_splits(str(ds.data_path), job.split.resolved(ds.manifest.rows_kept, job.search.max_rows), job.seed)
        train, _ = search_sample(ddf[ddf["_split"] == "train"], job.search.max_rows, job.seed, client)
        X, y = train[job.table.features], train["_label"]
        pipe = build_pipeline(job.table, "random_forest", ["none", "class_weight", "smote"], job.seed)

        def search() -> Any:
            return grid_search(pipe, grid, X, y, cv=5, scoring="roc_auc", seed=job.seed, client=client)

        search()  # warm-up
        t0 = time.monotonic()
        calm = search()
        calm_s = time.monotonic() - t0
        hit, hit_s = _killed_midway(search, calm_s, workers[0])
    same = hit is not None and hit.best_params == calm.best_params and \
        hit.cv_results["mean_test_score"].tolist() == calm.cv_results["mean_test_score"].tolist()
    return ["1 of 3 workers killed 40 % into a grid search (random forest, 60 fits, Telco)",
            "same best_params_ and CV scores" if same else "DIFFERENT results", f"{calm_s:.1f}", f"{hit_s:.1f}",
            f"{hit_s - calm_s:+.1f}"]


def ingest_scenario(tmp: Path) -> list[str]:
    src = tmp / "gen"
    generate(src, rows=1_000_000, files=2, seed=5, dirty=0.01)
    with dask_processes(tmp, 3) as (address, workers), cluster_client(address=address) as client:
        client.wait_for_workers(3, timeout=60)
        ingest(_job(tmp / "warm", TELCO), client)  # warm-up: imports and first calls on the workers
        t0 = time.monotonic()
        calm = ingest(_job(tmp / "calm", f"{src}/*.csv", "data.blocksize=4MiB"), client)
        calm_s = time.monotonic() - t0
        hit, hit_s = _killed_midway(lambda: ingest(_job(tmp / "hit", f"{src}/*.csv", "data.blocksize=4MiB"), client),
                                    calm_s, workers[0])
    fields = ("rows_read", "rows_kept", "rows_quarantined", "duplicates_removed")
    same = hit is not None and all(getattr(hit.manifest, f) == getattr(calm.manifest, f) for f in fields)
    return [f"1 of 3 workers killed 40 % into an ingest ({calm.manifest.rows_read:,} rows, 4 MiB blocks)",
            "same counts, no row lost or repeated" if same else "DIFFERENT counts", f"{calm_s:.1f}", f"{hit_s:.1f}",
            f"{hit_s - calm_s:+.1f}"]


def poison_scenario(tmp: Path) -> list[str]:
    job = _job(tmp, TELCO, "data.blocksize=65536")
    with dask_processes(tmp, 2) as (address, _), cluster_client(address=address) as client:
        client.wait_for_workers(2, timeout=60)
        client.register_plugin(_DieOnBlock("ingest-block-00002-"))
        t0 = time.monotonic()
        try:
            ingest(job, client)
            outcome = "NO ERROR"
        except PartitionKilledError as exc:
            outcome = f"error: {str(exc).split(' (bytes')[0]} … killed every worker ({exc.__class__.__name__})"
        took = time.monotonic() - t0
    return ["a block whose task kills every worker (allowed-failures 3: 4 attempts)", outcome, "-", f"{took:.1f}",
            "-"]


def no_workers_scenario(tmp: Path, workers_at_start: int = 2) -> list[str]:
    with dask_processes(tmp, workers_at_start) as (address, workers):
        proc = subprocess.Popen(
            [sys.executable, "-m", "churn.cli", "train", str(ROOT / "jobs" / "train.yaml"), "--scheduler", address,
             "--set", f"data.output={tmp / 'ds'}", "--set", f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
             "--set", "model.families=[random_forest]"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, env={**os.environ, "DASK_CHURN__CLUSTER__NO_WORKERS_TIMEOUT": "10s"})
        for line in proc.stderr:
            if "search random_forest (imbalance" in line or (not workers and "Dask client ready" in line):
                break
        time.sleep(2 if workers else 0)  # into the fits
        for w in workers:
            os.killpg(w.pid, signal.SIGKILL)
        t0 = time.monotonic()
        _, rest = proc.communicate(timeout=300)
        took = time.monotonic() - t0
    message = next((ln.strip() for ln in rest.splitlines() if "error:" in ln), "no message")
    what = ("every worker killed among the fits of `churn train`" if workers else
            "`churn train` on a scheduler whose workers never come")
    return [f"{what} (no-workers timeout 10 s)", f"exit {proc.returncode}, {message}", "-", f"{took:.1f}", "-"]


def main() -> None:
    bench_logging()
    rows = []
    (ROOT / "build").mkdir(exist_ok=True)
    for scenario in (search_scenario, ingest_scenario, poison_scenario, no_workers_scenario,
                     lambda tmp: no_workers_scenario(tmp, 0)):
        with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
            rows.append(scenario(Path(tmp)))
    write_table("faults", "Fault scenarios on `dask scheduler` + `dask worker` processes (1 thread each)",
                ["scenario", "outcome", "undisturbed s", "disturbed s", "recovery cost s"], rows, [
                    "disturbed s: wall time of the disturbed run, or until the error / exit; recovery cost = "
                    "disturbed - undisturbed, on the same data in the same run.",
                    "Each worker is a `dask worker` process group (nanny + worker) on 127.0.0.1; a kill is SIGKILL "
                    "to the whole group, so it is not restarted.",
                    "This machine has 2 cores, so 3 one-thread workers share them: losing one costs the lost "
                    "tasks' recomputation but hardly any throughput, and the recovery cost is within run-to-run "
                    "noise (a second or so).",
                    "Disturbed s for the failures: from the kill (or from the first log line when no worker ever "
                    "came) to the error or the exit.",
                ])


if __name__ == "__main__":
    main()
