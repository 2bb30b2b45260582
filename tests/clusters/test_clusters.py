"""Getting a cluster: LocalCluster from a spec, or an existing scheduler started as processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from churn.clusters import ClusterError, cluster_client
from churn.config import LocalClusterSpec
from churn.data.ingest import ingest
from churn.data.split import load_splits, search_sample
from churn.modeling.pipeline import build_pipeline, grid_for
from churn.modeling.search import grid_search
from tests.conftest import ROOT, job_spec

DASK = str(Path(sys.executable).parent / "dask")


@contextlib.contextmanager
def dask_processes(folder: Path, workers: int, scheduler_env: dict[str, str] | None = None,
                   worker_cwd: Path | None = None) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`dask scheduler` (``scheduler_env`` added to its environment) and ``workers`` `dask worker`
    process groups on 127.0.0.1, each worker with one thread and its nanny, started in
    ``worker_cwd`` (default: this folder): (scheduler address, worker processes); all stopped afterwards."""
    sched_file = folder / "scheduler.json"
    # the tests' own fault-injection plugins are pickled by reference: workers import them from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    sched = subprocess.Popen([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                              "--scheduler-file", str(sched_file)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True,
                             env={**env, **(scheduler_env or {})})
    procs: list[subprocess.Popen] = []
    try:
        deadline = time.monotonic() + 60
        address = None
        while address is None and time.monotonic() < deadline:  # the file exists before it is written
            with contextlib.suppress(OSError, ValueError, KeyError):
                address = json.loads(sched_file.read_text())["address"]
            time.sleep(0.1)
        for _ in range(workers):
            procs.append(subprocess.Popen([DASK, "worker", "--scheduler-file", str(sched_file), "--host",
                                           "127.0.0.1", "--nthreads", "1", "--no-dashboard", "--memory-limit", "2GiB"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                                          env=env, cwd=worker_cwd))
        if address is None:
            raise RuntimeError(f"dask scheduler wrote no address to {sched_file} within 60 s")
        yield address, procs
    finally:
        for p in [*reversed(procs), sched]:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*procs, sched]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture
def scheduler_address(tmp_path):
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1, stopped afterwards."""
    with dask_processes(tmp_path, 2) as (address, _):
        yield address


def test_search_runs_on_an_existing_scheduler(scheduler_address, tmp_path, telco_subset):
    """Connect by address over TCP; the grid search's fits run on both worker processes."""

    job = job_spec(tmp_path, telco_subset, "search.cv=3")
    with cluster_client(address=scheduler_address) as client:
        client.wait_for_workers(2, timeout=60)
        from distributed import get_task_stream

        ds = ingest(job, client)
        ddf = load_splits(str(ds.data_path), job.split.resolved(ds.manifest.rows_kept, job.search.max_rows), job.seed)
        train, _ = search_sample(ddf[ddf["_split"] == "train"], job.search.max_rows, job.seed, client)
        pipe = build_pipeline(job.table, "random_forest", "smote", job.seed)
        with get_task_stream(client) as stream:
            res = grid_search(pipe, grid_for("random_forest", {"n_estimators": [10, 20], "min_samples_leaf": [1, 4]}),
                              train[job.table.features], train["_label"], cv=3, scoring="roc_auc",
                              seed=job.seed, client=client)
        used = {t["worker"] for t in stream.data if str(t["key"]).startswith("_fit_group")}
        assert used == set(client.scheduler_info()["workers"])
        assert len(used) == 2
        assert 0.5 < res.best_score <= 1


def test_unreachable_scheduler_fails_fast():
    """A scheduler address where nothing listens gets a clear error within the timeout."""
    t0 = time.perf_counter()
    with pytest.raises(ClusterError, match=r"cannot reach Dask scheduler at tcp://127.0.0.1:9 within 2s"):
        with cluster_client(address="tcp://127.0.0.1:9", timeout="2s"):
            pass
    assert time.perf_counter() - t0 < 30


@pytest.mark.cluster
def test_local_cluster_closes_when_startup_fails():
    """A LocalCluster that cannot start raises ClusterError and leaves nothing running."""
    with pytest.raises(ClusterError, match="cannot start LocalCluster"):
        with cluster_client(LocalClusterSpec(host="203.0.113.1", n_workers=1, dashboard_address=None)):
            pass


def test_dashboard_link_only_when_a_dashboard_answers(scheduler_address):
    """A scheduler started with --no-dashboard gets no link; a LocalCluster with one gets its URL."""
    from churn.clusters import dashboard_link

    with cluster_client(address=scheduler_address) as client:
        assert dashboard_link(client) is None
    spec = LocalClusterSpec(n_workers=1, memory_limit="1GiB", dashboard_address="127.0.0.1:0")
    with cluster_client(spec) as client:
        link = dashboard_link(client)
        assert link is not None and link.startswith("http://127.0.0.1:") and link.endswith("/status")


def test_local_workers_start_with_the_worker_environment(client):
    """LocalCluster worker processes start with glibc's mmap and trim thresholds from churn.yaml."""
    from tests.clusters.test_render import start_environ

    assert set(client.run(start_environ("MALLOC_MMAP_THRESHOLD_")).values()) == {str(16 << 20)}
    assert set(client.run(start_environ("MALLOC_TRIM_THRESHOLD_")).values()) == {str(64 << 20)}
