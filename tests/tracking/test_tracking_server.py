"""Tracking against a real `mlflow server` process on 127.0.0.1, and an unreachable one."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from churn.jobs.train import run
from churn.tracking.registry import load_churn_model
from churn.tracking.store import TrackingError, check_reachable
from tests.conftest import ROOT, job_spec
from tests.servers import http_process

MLFLOW = str(Path(sys.executable).parent / "mlflow")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` with a SQLite backend and served artifacts, stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with http_process([MLFLOW, "server", "--host", "127.0.0.1", "--port", "{port}",
                       "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                       "--artifacts-destination", str(root / "artifacts"), "--workers", "1"], "/health") as url:
        yield url


def test_train_against_a_tracking_server(client, tmp_path, telco_subset, mlflow_server):
    """Runs, artifacts and the registered champion go through the server's REST API."""
    job = job_spec(tmp_path, telco_subset, "search.cv=2", "model.families=[logistic_regression]",
                   "evaluation.plots=false", f"tracking.uri={mlflow_server}", "search.repeats=1",
                   "model.grids={logistic_regression: {C: [1.0]}}", "model.feature_sums=false")
    result = run(job, client)
    mlflow.set_tracking_uri(mlflow_server)
    assert mlflow.get_run(result.run_id).data.metrics["test_roc_auc"] > 0.7
    model = mlflow.pyfunc.load_model("models:/customer-churn@champion")
    raw = pd.read_csv(telco_subset, na_values=[" "]).head(5).drop(columns=["customerID", "Churn"])
    assert list(model.predict(raw).columns) == ["probability", "decision"]
    # the digests recorded at registration match the files downloaded through the server
    assert load_churn_model(result.model_uri).version == result.model_version
    # artifacts went through the server's artifact proxy, not to a local folder
    assert mlflow.get_run(result.run_id).info.artifact_uri.startswith("mlflow-artifacts:")


@pytest.mark.cluster
def test_unreachable_tracking_server_is_named_before_any_cluster(forked_churn):
    """A tracking URI where nothing listens: one message with the URI, exit code 1, no cluster."""
    with pytest.raises(TrackingError, match=r"cannot reach MLflow tracking server at http://127.0.0.1:9"):
        check_reachable("http://127.0.0.1:9", timeout=2)
    proc = forked_churn.run("train", str(ROOT / "jobs" / "train.yaml"), "--set", "tracking.uri=http://127.0.0.1:9",
                            cwd=ROOT, timeout=120)
    assert proc.returncode == 1
    assert "cannot reach MLflow tracking server at http://127.0.0.1:9" in proc.stderr
    assert "Dask client ready" not in proc.stderr
