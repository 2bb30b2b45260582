"""Relative paths on a cluster whose worker runs in another folder: every command makes them
absolute on the client; a worker that cannot read a path says so in one line naming it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from churn.clusters import cluster_client
from churn.config import JobSpec, apply_overrides
from churn.data.blocks import UnreadableError
from churn.data.ingest import ingest
from tests.clusters.test_clusters import dask_processes
from tests.conftest import ROOT

pytestmark = pytest.mark.cluster  # a `dask scheduler` and a `dask worker` process, and the churn command

ONE_CANDIDATE = ["search.cv=2", "search.repeats=1", "model.families=[logistic_regression]", "model.imbalance=[none]",
                 "model.grids={logistic_regression: {C: [1.0]}}", "model.feature_sums=false",
                 "evaluation.plots=false", "model.finalize=false"]


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory):
    """A scheduler and one worker started in a folder of their own: (address, the worker's folder)."""
    # as deep as the repository, so that a path relative to it cannot reach the same file from here
    folder = tmp_path_factory.mktemp("worker-folder").joinpath(*["w"] * len(ROOT.parts))
    folder.mkdir(parents=True)
    with dask_processes(folder, 1, worker_cwd=folder) as (address, _):
        yield address, folder


def _rel(path: Path) -> str:
    return os.path.relpath(path, ROOT)


def test_every_command_sends_the_workers_absolute_paths(elsewhere, forked_churn, tmp_path, telco_subset):
    """train, ingest, score and monitor with paths relative to the repository: the worker, whose
    folder is another, reads and writes the right files."""
    address, worker_folder = elsewhere
    assert not (worker_folder / _rel(telco_subset)).exists()  # the relative path means nothing there
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["--scheduler", address, "--set", f"data.source={_rel(telco_subset)}", "--set", f"tracking.uri={store}"]
    sets = [arg for kv in ONE_CANDIDATE for arg in ("--set", kv)]

    def _churn(*args: str) -> subprocess.CompletedProcess:  # forked from one that imported churn (tests.forkcli)
        t0 = time.perf_counter()
        try:
            return forked_churn.run(*args, cwd=ROOT, timeout=600)
        finally:
            print(f"churn {args[0]}: {time.perf_counter() - t0:.1f}s")

    train = _churn("train", "jobs/train.yaml", *common, "--set", f"data.output={_rel(tmp_path / 'ds')}", *sets)
    assert train.returncode == 0, train.stderr[-3000:]
    ingested = _churn("ingest", "jobs/train.yaml", *common, "--set", f"data.output={_rel(tmp_path / 'ds2')}")
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    assert list((tmp_path / "ds2").glob("dataset-*/manifest.json"))
    scored = _churn("score", "jobs/score.yaml", *common, "--set", f"data.output={_rel(tmp_path / 'scores')}")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert list((tmp_path / "scores").glob("scores-*/data/*.parquet"))
    monitored = _churn("monitor", "jobs/monitor.yaml", *common, "--set", f"report={_rel(tmp_path / 'reports')}")
    assert monitored.returncode in (0, 3), monitored.stderr[-3000:]  # 3: drift found; the batch was read
    assert list((tmp_path / "reports").glob("*/report.html"))
    assert {p.name for p in worker_folder.iterdir()} <= {"dask-scratch-space", "scheduler.json"}  # nothing went there


def test_a_worker_that_cannot_read_a_path_names_it_and_itself(elsewhere, tmp_path, telco_subset, monkeypatch):
    """A spec built without the loader keeps its relative path: the worker cannot read it, and the
    error is one line naming the path and the worker."""
    address, _ = elsewhere
    monkeypatch.chdir(ROOT)
    data = apply_overrides(yaml.safe_load((ROOT / "jobs" / "train.yaml").read_text()),
                           [f"data.source={_rel(telco_subset)}", f"data.output={tmp_path / 'ds'}"])
    job = JobSpec.model_validate(data)
    with cluster_client(address=address) as client:
        with pytest.raises(UnreadableError) as err:
            ingest(job, client)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{_rel(telco_subset)}: worker tcp://127.0.0.1:")
    assert "cannot read it (No such file or directory)" in message
