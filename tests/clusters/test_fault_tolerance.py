"""Losing a worker process in the middle of a grid search: the search finishes with the same results."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from churn.clusters import cluster_client
from churn.data.ingest import ingest
from churn.data.split import load_splits, search_sample
from churn.modeling.pipeline import build_pipeline, grid_for
from churn.modeling.search import grid_search
from tests.clusters.test_clusters import dask_processes
from tests.conftest import job_spec


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
        ddf = load_splits(str(ingest(job, client).data_path), job.split, job.seed)
        train, _ = search_sample(ddf[ddf["_split"] == "train"], job.search.max_rows, job.seed, client)
        X, y = train[job.table.features], train["_label"]
        pipe = build_pipeline(job.table, "random_forest", ["none", "class_weight", "smote"], job.seed)

        def search():
            return grid_search(pipe, grid, X, y, cv=4, scoring="roc_auc", seed=job.seed, client=client,
                               engine=engine)

        search()  # warm-up: imports and first-call costs on the workers, so the two timed runs match
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
