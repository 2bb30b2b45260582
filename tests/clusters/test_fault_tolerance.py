"""Worker processes that die: in the middle of a grid search or an ingest (same results), or every time
one block runs (a clear error naming it)."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin

from churn.clusters import cluster_client
from churn.clusters.watch import WorkerWatch
from churn.data.generate import generate
from churn.data.ingest import ingest
from churn.data.partitions import PartitionKilledError
from churn.data.split import load_splits, search_sample
from churn.modeling.pipeline import build_pipeline, grid_for
from churn.modeling.search import grid_search
from tests.clusters.test_clusters import dask_processes
from tests.conftest import ROOT, job_spec

pytestmark = pytest.mark.cluster  # every test starts `dask scheduler` and `dask worker` processes


@pytest.fixture
def three_workers(tmp_path):
    """`dask scheduler` and three `dask worker` process groups on 127.0.0.1: (address, worker processes)."""
    with dask_processes(tmp_path, 3) as started:
        yield started


@pytest.mark.parametrize("engine", ["churn", "sklearn"])
def test_search_survives_a_killed_worker(three_workers, tmp_path, telco_subset, engine):
    """SIGKILL one of three worker process groups 40 % into the search: the same best_params_ and
    the same CV scores as the undisturbed search (lost fold preparations and fits are recomputed)."""
    address, workers = three_workers
    job = job_spec(tmp_path, telco_subset, "search.cv=4")
    grid = grid_for("random_forest", {"n_estimators": [20], "min_samples_leaf": [1, 2, 4, 8]},
                    imbalance=["none", "class_weight", "smote"])
    with cluster_client(address=address) as client:
        client.wait_for_workers(3, timeout=60)
        ds = ingest(job, client)
        ddf = load_splits(str(ds.data_path), job.split.resolved(ds.manifest.rows_kept, job.search.max_rows), job.seed)
        train, _ = search_sample(ddf[ddf["_split"] == "train"], job.search.max_rows, job.seed, client)
        X, y = train[job.table.features], train["_label"]
        pipe = build_pipeline(job.table, "random_forest", ["none", "class_weight", "smote"], job.seed)

        def search(points=grid):
            return grid_search(pipe, points, X, y, cv=4, scoring="roc_auc", seed=job.seed, client=client,
                               engine=engine)

        # warm-up: imports and first-call costs on every worker (one candidate with SMOTE, 4 folds: a
        # fit on each worker), so the two timed runs match
        search([{**part, "model__min_samples_leaf": [1]} for part in grid if "smote" in part["resample__method"]])
        calm = search()
        out = {}
        runner = threading.Thread(target=lambda: out.update(res=search()))
        t0 = time.monotonic()
        runner.start()
        time.sleep(0.4 * calm.seconds)  # well inside the second search: it takes about as long
        os.killpg(workers[0].pid, signal.SIGKILL)
        killed_at = time.monotonic() - t0
        runner.join(timeout=300)
        assert not runner.is_alive()
        deadline = time.monotonic() + 30
        while len(client.scheduler_info()["workers"]) != 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # the scheduler notices the dead worker when its connection drops
        assert len(client.scheduler_info()["workers"]) == 2
    disturbed = out["res"]
    assert killed_at < disturbed.seconds  # the kill happened while the search ran
    assert disturbed.best_params == calm.best_params
    assert disturbed.cv_results["mean_test_score"].tolist() == calm.cv_results["mean_test_score"].tolist()


class _DieOnBlock(WorkerPlugin):
    """Test fault: the worker process exits as soon as it starts the task of one block."""

    name = "die-on-block"

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and self.marker in str(key):
            os._exit(1)


def test_a_block_that_kills_every_worker_is_named(tmp_path, telco_subset):
    """A block whose task kills each worker that runs it fails the ingest after the scheduler's
    allowed failures, with the stage, the file and the byte range named; nothing is published."""
    job = job_spec(tmp_path, telco_subset, "data.blocksize=65536")
    with dask_processes(tmp_path, 2, {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}) as (address, _):
        with cluster_client(address=address) as client:
            client.wait_for_workers(2, timeout=60)
            client.register_plugin(_DieOnBlock("ingest-block-00002-"))
            with pytest.raises(PartitionKilledError, match=r"ingest: block 2 of .*telco-subset\.csv \(bytes "
                                                           r"[\d,]+\.\.[\d,]+, from line [\d,]+\) killed every "
                                                           r"worker that ran it \(2 attempts"):
                ingest(job, client)
    out = Path(job.data.output)
    assert not [p for p in out.iterdir() if p.name.startswith("dataset-")]  # no dataset, no staging left


def test_a_worker_killed_during_ingest_changes_nothing(three_workers, tmp_path):
    """SIGKILL one of three worker groups while ingest runs: the same rows, counts and content as an
    undisturbed ingest of the same files (re-run blocks overwrite, never add)."""
    address, workers = three_workers
    src = tmp_path / "gen"
    generate(src, rows=150_000, files=2, seed=5, dirty=0.01)  # with 1 MiB blocks: as many blocks as 300k rows in 2 MiB
    calm_job = job_spec(tmp_path / "calm", f"{src}/*.csv", "data.blocksize=1MiB")
    hit_job = job_spec(tmp_path / "hit", f"{src}/*.csv", "data.blocksize=1MiB")
    with cluster_client(address=address) as client:
        client.wait_for_workers(3, timeout=60)
        t0 = time.monotonic()
        calm = ingest(calm_job, client)
        calm_seconds = time.monotonic() - t0
        out = {}
        runner = threading.Thread(target=lambda: out.update(ds=ingest(hit_job, client)))
        runner.start()
        written: list[Path] = []  # the kill comes once the first blocks are written, while the others run
        deadline = time.monotonic() + 2 * calm_seconds + 30
        while len(written) < 2 and time.monotonic() < deadline:
            written = list(Path(hit_job.data.output).glob(".staging-*/quarantine/part-*.parquet"))
            time.sleep(0.005)
        os.killpg(workers[0].pid, signal.SIGKILL)
        runner.join(timeout=300)
        assert not runner.is_alive()
    hit = out["ds"]
    assert 2 <= len(written) < hit.manifest.partitions  # the kill happened while blocks were being ingested
    for attr in ("rows_read", "rows_kept", "rows_quarantined", "duplicates_removed"):
        assert getattr(hit.manifest, attr) == getattr(calm.manifest, attr), attr
    a = pd.read_parquet(calm.data_path).sort_values("_key", kind="stable").reset_index(drop=True)
    b = pd.read_parquet(hit.data_path).sort_values("_key", kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("workers_at_start, message", [
    (0, "no Dask worker for 3s (churn.cluster.no-workers-timeout)"),  # a scheduler whose workers never came
    (2, "the cluster lost every worker, and with them the data the job had sent"),  # killed among the fits
])
def test_all_workers_gone_fails_within_the_timeout(forked_churn, tmp_path, telco_subset, workers_at_start, message):
    """A cluster without workers (none came, or all were killed among the fits): `churn train` stops
    within the configured no-workers timeout, or at once when the data it sent went with the
    workers, with one line saying so (exit 1) instead of waiting for ever; its run ends FAILED."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with dask_processes(tmp_path, workers_at_start) as (address, workers):
        if workers:  # the job starts at once (no interpreter to start): its workers must be there already
            with Client(address, set_as_default=False) as waiter:
                waiter.wait_for_workers(len(workers), timeout=120)
        proc = forked_churn.start(  # churn train in a process forked from one that imported churn (tests.forkcli)
            "train", str(ROOT / "jobs" / "train.yaml"), "--scheduler", address,
            "--set", f"data.source={telco_subset}", "--set", f"data.output={tmp_path / 'ds'}",
            "--set", f"tracking.uri={store}", "--set", "model.families=[random_forest]",
            cwd=ROOT, env={**os.environ, "DASK_CHURN__CLUSTER__NO_WORKERS_TIMEOUT": "3s"})
        lines: list[str] = []
        for line in proc.stderr:  # until the search starts, or until the job waits for workers
            lines.append(line)
            if "search random_forest (imbalance" in line or (not workers and "Dask client ready" in line):
                break
        time.sleep(2.0 if workers else 0.0)  # well into the fits
        for w in workers:
            os.killpg(w.pid, signal.SIGKILL)
        killed = time.monotonic()
        try:
            _, rest = proc.communicate(timeout=120)
        finally:
            proc.kill()
        stopped_after = time.monotonic() - killed
    assert proc.returncode == 1, "".join(lines) + rest
    assert message in rest
    assert "Traceback" not in rest
    assert stopped_after < 60
    tracking = mlflow.MlflowClient(store)
    [run] = tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])
    assert run.info.status == "FAILED"


@pytest.mark.cluster
def test_the_watch_cancels_tasks_submitted_after_it_gave_up():
    """A driver still preparing its first stage when the no-workers timeout passes (a busy machine)
    submits its tasks after the watch gave up: they are cancelled too, so the job stops at once
    instead of waiting for ever (it once outlived the test's 120 s)."""
    with LocalCluster(n_workers=0, processes=False, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster, set_as_default=False) as client, WorkerWatch(client, timeout=0.2, poll=0.05) as watch:
        deadline = time.monotonic() + 30
        while watch.message is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert watch.message and "no Dask worker for 0.2s" in watch.message
        late = client.submit(sum, [1, 2], pure=False)
        with pytest.raises(CancelledError):
            late.result(timeout=10)
