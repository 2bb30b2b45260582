"""churn monitor end to end: a registered model's training profile against new CSV batches."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from churn.config import load_monitor_job
from churn.jobs.monitor import run as monitor
from churn.jobs.train import run as train
from tests.conftest import ROOT, job_spec

TELCO = ROOT / "data" / "telco" / "Telco-Customer-Churn.csv"


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory, telco_subset):
    """A quick model on the Telco subset, registered with its training profile."""
    tmp = tmp_path_factory.mktemp("monitor")
    job = job_spec(tmp, telco_subset, "search.cv=3", "evaluation.plots=false",
                   "model.families=[logistic_regression]", "model.grids={logistic_regression: {C: [1.0]}}")
    train(job, client)
    return tmp, job.tracking.uri


def _batches(tmp) -> tuple:
    """The Telco rows after the subset (labelled, same distribution), and the same rows drifted:
    monthly charges up 40 %, most customers moved to two-year contracts."""
    rows = pd.read_csv(TELCO, dtype=str, keep_default_na=False).iloc[1500:]
    calm = tmp / "calm.csv"
    rows.to_csv(calm, index=False)
    drifted = rows.copy()
    drifted["MonthlyCharges"] = (drifted["MonthlyCharges"].astype(float) * 1.4).round(2).astype(str)
    moved = np.random.default_rng(0).random(len(drifted)) < 0.6
    drifted.loc[moved, "Contract"] = "Two year"
    shifted = tmp / "drifted.csv"
    drifted.to_csv(shifted, index=False)
    return calm, shifted


def _spec(tmp, uri, source):
    return load_monitor_job(ROOT / "jobs" / "monitor.yaml", [f"data.source={source}", f"tracking.uri={uri}",
                                                              f"report={tmp / 'reports'}"])


def test_monitor_finds_exactly_the_drifted_features(client, trained):
    """Undrifted batch: no alert; drifted batch: exactly MonthlyCharges and Contract, and the run
    and report name them; a labelled batch gets performance against the out-of-fold figures."""
    tmp, uri = trained
    calm, shifted = _batches(tmp)
    quiet = monitor(_spec(tmp, uri, calm), client)
    assert quiet.drift.drifted == [] and not any(a.startswith("feature") for a in quiet.drift.alerts)
    assert quiet.batch.rows_read == quiet.batch.rows_profiled + quiet.batch.rows_quarantined == 7043 - 1500
    perf = quiet.drift.performance
    assert abs(perf["roc_auc"]["batch"] - perf["roc_auc"]["reference"]) < 0.05
    assert 0 < perf["brier"]["batch"] < 0.25

    loud = monitor(_spec(tmp, uri, shifted), client)
    assert sorted(loud.drift.drifted) == ["Contract", "MonthlyCharges"]
    html = loud.report.read_text()
    assert html.startswith("<!doctype html>") and "MonthlyCharges" in html and "data:image/png;base64," in html
    saved = json.loads((loud.report.parent / "drift.json").read_text())
    assert {f["feature"] for f in saved["features"] if f["flagged"]} == {"Contract", "MonthlyCharges"}
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(loud.run_id)
    assert sorted(run.data.tags["drifted_features"].split(",")) == ["Contract", "MonthlyCharges"]
    assert run.data.metrics["psi_Contract"] >= 0.2
    version = mlflow.MlflowClient().get_model_version("customer-churn", run.data.tags["model_version"])
    assert version.tags["last_monitor_run"] == loud.run_id


def test_monitor_exit_code_follows_the_thresholds(client, trained):
    """The command exits 3 on the drifted batch, 0 when the thresholds are switched off."""
    tmp, uri = trained
    _, shifted = _batches(tmp)
    base = [sys.executable, "-m", "churn.cli", "monitor", str(ROOT / "jobs" / "monitor.yaml"),
            "--scheduler", client.scheduler.address, "--set", f"data.source={shifted}", "--set",
            f"tracking.uri={uri}", "--set", f"report={tmp / 'cli-reports'}"]
    alert = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert alert.returncode == 3, alert.stderr
    assert "Contract" in alert.stdout and "MonthlyCharges" in alert.stdout
    off = ["--set", "thresholds.psi=null", "--set", "thresholds.prediction_psi=null", "--set",
           "thresholds.roc_auc_drop=null", "--set", "thresholds.brier_rise=null"]
    quiet = subprocess.run(base + off, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert quiet.returncode == 0, quiet.stderr


def test_a_model_that_is_not_there_is_named(client, trained):
    """An alias that points nowhere: exit 2, one line naming the URI, no traceback."""
    tmp, uri = trained
    proc = subprocess.run([sys.executable, "-m", "churn.cli", "monitor", str(ROOT / "jobs" / "monitor.yaml"),
                           "--scheduler", client.scheduler.address, "--set", f"tracking.uri={uri}",
                           "--set", "model_uri=models:/customer-churn@nowhere", "--set", f"report={tmp / 'r'}"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "model_uri: cannot load models:/customer-churn@nowhere" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
