"""Stock ``mlflow models serve`` serves a registered model that holds an XGBoost booster, on a host
where neither churn nor dask can be imported (the README's "serve the checked copy" commands)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from churn.serving.trusted import saved_types
from tests.conftest import ROOT, job_spec
from tests.servers import http_process
from tests.serving.test_standalone import _booster_model

BIN = Path(sys.executable).parent  # the venv's bin: mlflow, and the uvicorn it runs
MLFLOW = str(BIN / "mlflow")
ABSENT = "raise ImportError('{name} is not installed on this host')\n"


def _host_without(folder: Path, *names: str) -> Path:
    """A folder that, first on PYTHONPATH, makes each of ``names`` fail to import (a serving host
    without them; the model's own copy of churn, which MLflow puts first on sys.path, still loads)."""
    for name in names:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(ABSENT.format(name=name))
    return folder


@pytest.mark.cluster
def test_stock_mlflow_models_serve_answers_with_a_booster_model(forked_churn, tmp_path, telco_subset):
    """`churn verify … --into` then `mlflow models serve -m <copy> --env-manager local`, with dask,
    distributed and churn unimportable outside the model: /invocations returns the probabilities the
    training process computes, from the booster saved as UBJ (the model's requirements name xgboost)."""
    job = job_spec(tmp_path, telco_subset, "evaluation.plots=false")
    mlflow.MlflowClient(job.tracking.uri).create_experiment(job.tracking.experiment)
    uri, model = _booster_model(job, telco_subset, "churn-xgboost", ("xgboost",))
    copy = tmp_path / "checked-model"
    # `churn verify` in a process forked from one that imported churn (tests.forkcli)
    verify = forked_churn.run("verify", uri, "--into", str(copy), "--tracking-uri", job.tracking.uri, cwd=tmp_path,
                              timeout=300)
    assert verify.returncode == 0, verify.stderr[-1500:]
    assert "churn.modeling.boosting.XGBoostClassifier" in saved_types(str(copy / "artifacts" / "pipeline.skops"))
    assert any(r.startswith("xgboost") for r in (copy / "requirements.txt").read_text().split())

    host = _host_without(tmp_path / "host", "dask", "distributed", "churn")
    probe = subprocess.run([sys.executable, "-c", "import dask"], env={"PYTHONPATH": str(host)},
                           capture_output=True, text=True)
    assert "dask is not installed on this host" in probe.stderr  # the stand-in host really lacks dask

    rows = pd.read_csv(telco_subset, na_values=[" "]).head(25).drop(columns=["customerID", "Churn"])
    body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
    with http_process([MLFLOW, "models", "serve", "-m", str(copy), "--env-manager", "local", "-h", "127.0.0.1",
                       "-p", "{port}"], "/ping", cwd=tmp_path,
                      env={"PYTHONPATH": str(host), "PATH": f"{BIN}:{os.environ['PATH']}"}) as url:
        req = urllib.request.Request(url + "/invocations", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            served = json.loads(resp.read())["predictions"]
    expected = model.predict_proba(rows)[:, 1]
    got = [row["probability"] for row in served]
    assert len(got) == len(rows) and max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 1e-9
    assert str(ROOT) not in json.dumps(served)  # nothing about the training host in the answer
