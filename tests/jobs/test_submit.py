"""Detached jobs: `churn submit` returns at once with a run id; the driver runs on the cluster, and
`churn status` follows it in MLflow."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import mlflow
import pytest

from tests.clusters.test_clusters import dask_processes
from tests.conftest import ROOT

pytestmark = pytest.mark.cluster


@pytest.fixture
def _churn(forked_churn) -> Callable[..., subprocess.CompletedProcess]:
    """``churn ARGS`` in a process forked from one that imported churn (:mod:`tests.forkcli`)."""
    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return forked_churn.run(*args, cwd=ROOT, timeout=timeout)
    return run


def test_submitted_job_finishes_after_the_submitter_exits(_churn, tmp_path, telco_subset):
    """On one worker with one thread (the driver must not hold it), a submitted job goes on after
    `churn submit` has exited, and `churn status --wait` reports it finished, stage done."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with dask_processes(tmp_path, 1) as (address, _):
        sub = _churn("submit", str(ROOT / "jobs" / "train.yaml"), "--scheduler", address,
                     "--set", f"data.source={telco_subset}", "--set", f"data.output={tmp_path / 'ds'}",
                     "--set", f"tracking.uri={store}", "--set", "search.cv=2",
                     "--set", "model.families=[logistic_regression,decision_tree]",
                     "--set", "evaluation.plots=false", "--set", "search.repeats=1",
                     "--set", "model.imbalance=[none]", "--set", "model.feature_sums=false",
                     "--set", "model.grids={logistic_regression: {C: [1.0]}, decision_tree: {max_depth: [4]}}")
        assert sub.returncode == 0, sub.stderr[-3000:]
        run_id = sub.stdout.strip().splitlines()[-1]
        run = mlflow.MlflowClient(store).get_run(run_id)
        assert run.info.end_time is None, "the job ended before churn submit returned"
        waited = _churn("status", run_id, "--tracking-uri", store, "--wait", "--poll", "1", timeout=600)
        assert waited.returncode == 0, waited.stdout + waited.stderr
        assert "FINISHED" in waited.stdout and "done" in waited.stdout
    run = mlflow.MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_roc_auc"] > 0.7
    version = mlflow.MlflowClient(store).get_model_version_by_alias("customer-churn", "champion")
    assert version.run_id == run_id


def test_status_of_a_failed_run_names_the_error(_churn, tmp_path, telco_subset):
    """A submitted job that fails on the cluster ends FAILED, and `churn status` shows why, exit 1."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with dask_processes(tmp_path, 1) as (address, _):
        sub = _churn("submit", str(ROOT / "jobs" / "train.yaml"), "--scheduler", address,
                     "--set", f"data.source={telco_subset}", "--set", f"data.output={tmp_path / 'ds'}",
                     "--set", f"tracking.uri={store}", "--set", "search.cv=2",
                     "--set", "model.families=[logistic_regression]", "--set", "data.max_bad_fraction=0",
                     "--set", "schema.numeric.tenure.max=10")  # most rows now break the schema
        assert sub.returncode == 0, sub.stderr[-3000:]
        run_id = sub.stdout.strip().splitlines()[-1]
        waited = _churn("status", run_id, "--tracking-uri", store, "--wait", "--poll", "1", timeout=600)
    assert waited.returncode == 1, waited.stdout + waited.stderr
    assert "FAILED" in waited.stdout and "IngestError" in waited.stdout and "ingest" in waited.stdout
    missing = _churn("status", "0" * 32, "--tracking-uri", store)
    assert missing.returncode == 2 and f"no run {'0' * 32}" in missing.stderr
