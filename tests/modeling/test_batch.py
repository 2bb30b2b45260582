"""Batch scoring on the cluster equals in-memory predict_proba, and its counts reconcile."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import mlflow
import pandas as pd
import pytest
import sklearn

from churn.clusters import cluster_client
from churn.config import AddressSpec, LocalClusterSpec, ScoreSpec, load_score_job
from churn.jobs import score as score_job
from churn.serving.reasons import explain, reason_columns, top_reasons
from churn.tracking.registry import environment_mismatches
from churn.tracking.verify import verified_model
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def trained(finished_train):
    """The suite's registered model (``finished_train``: trained on the Telco subset plus two rows its
    ingest quarantines) and the folder of its store, which the scores are written beside."""
    job, result = finished_train
    return Path(job.data.output).parent, result


def _spec(tmp, source, *sets: str) -> ScoreSpec:
    return load_score_job(ROOT / "jobs" / "score.yaml", [f"data.source={source}", f"data.output={tmp / 'scores'}",
                                                         f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
                                                         "data.blocksize=20000", *sets])


def test_batch_scores_equal_in_memory_predict_proba(client, trained, telco_subset):
    """No label column, 3 bad lines among 1,506: 1,503 scored exactly as predict_proba, 3 quarantined."""
    tmp, result = trained
    frame = pd.read_csv(telco_subset, dtype=str, keep_default_na=False).drop(columns=["Churn"])
    frame.loc[10, "Contract"] = "Ten year"
    frame.loc[700, "tenure"] = "-5"
    src = tmp / "to-score.csv"
    frame.to_csv(src, index=False)
    raw = src.read_bytes().split(b"\n")
    raw[1201] = raw[1201].replace(b",", b",\xe9", 1)  # a latin-1 byte in the gender field
    src.write_bytes(b"\n".join(raw))

    res = score_job.run(_spec(tmp, src, "reasons=3"), client)
    assert (res.rows_read, res.rows_scored, res.rows_quarantined) == (1506, 1503, 3)
    assert res.reasons == {"invalid_encoding": 1, "out_of_range": 1, "unknown_category": 1}
    scores = pd.read_parquet(res.root / "data")
    assert set(scores.columns) == {"customerID", "probability", "decision", "model_name", "model_version",
                                   "scored_at", *reason_columns(3)}
    assert (scores["model_name"] == "customer-churn").all() and (scores["model_version"] == "1").all()
    manifest = json.loads((res.root / "manifest.json").read_text())
    assert (scores["scored_at"] == pd.Timestamp(manifest["scored_at"])).all()  # one UTC time for the batch
    reference = pd.read_csv(telco_subset, na_values=[" "]).set_index("customerID").drop(columns=["Churn"])
    expected = result.model.predict_proba(reference.loc[scores["customerID"]])[:, 1]
    assert abs(scores["probability"].to_numpy() - expected).max() < 1e-12
    assert (scores["decision"] == (expected >= result.threshold.value)).all()
    # the reason codes are the in-memory explanation's top 3, values as the rows hold them
    rows = reference.loc[scores["customerID"]]
    top = top_reasons(explain(result.model, rows), rows, 3)
    assert (scores["reason_1_column"].to_numpy() == top["reason_1_column"].to_numpy()).all()
    assert (scores["reason_3_value"].fillna("").to_numpy() == top["reason_3_value"].fillna("").to_numpy()).all()
    assert abs(scores["reason_2_contribution"].to_numpy() - top["reason_2_contribution"].to_numpy()).max() < 1e-9
    assert set(scores["reason_1_column"]) <= set(rows.columns)
    assert manifest["rows_read"] == manifest["rows_scored"] + manifest["rows_quarantined"]
    assert len(manifest["blocks"]) > 5  # scored block by block


def test_the_label_may_be_present(client, trained, telco_subset):
    """With the Churn column kept, every row of the subset is scored; the staging folder a killed score
    driver left behind is removed (one of another host is not)."""
    tmp, _ = trained
    spec = _spec(tmp / "with-label", telco_subset, f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", "reasons=0")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = {}
    for name, host in [("dead", socket.gethostname()), ("foreign", socket.gethostname() + "-elsewhere")]:
        left[name] = Path(spec.data.output) / f".staging-scores-{name}"
        (left[name] / "data").mkdir(parents=True)
        (left[name] / "owner.json").write_text(json.dumps({"host": host, "pid": dead.pid}))
    res = score_job.run(spec, client)
    assert (res.rows_read, res.rows_scored, res.rows_quarantined) == (1506, 1506, 0)
    assert not left["dead"].exists() and left["foreign"].exists()
    assert not any(c.startswith("reason_") for c in pd.read_parquet(res.root / "data").columns)  # reasons=0


def test_small_inputs_score_in_threads_of_the_driver(client, trained, telco_subset):
    """A local cluster spec of worker processes becomes one in-process worker of as many threads
    for an input up to churn.score.in-process-max (not beyond, nor for another kind of cluster);
    it gives the process cluster's scores, and the seconds reported are the scoring alone."""
    tmp, _ = trained
    store = f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}"
    spec = _spec(tmp / "in-process", telco_subset, store)
    local = LocalClusterSpec(n_workers=2, threads_per_worker=1, dashboard_address=None)
    threads = score_job.cluster_for(spec, local)
    assert (threads.processes, threads.n_workers, threads.threads_per_worker) == (False, 1, 2)
    with dask.config.set({"churn.score.in-process-max": telco_subset.stat().st_size - 1}):
        assert score_job.cluster_for(spec, local) == local  # one byte over
    address = AddressSpec(address="tcp://127.0.0.1:8786")
    assert score_job.cluster_for(spec, address) is address and score_job.cluster_for(spec, None) is None

    with cluster_client(threads) as in_process:
        assert in_process.scheduler.address.startswith("inproc://")
        t0 = time.perf_counter()
        ours = score_job.run(spec, in_process)
        wall = time.perf_counter() - t0
    theirs = score_job.run(_spec(tmp / "processes", telco_subset, store), client)
    assert (ours.rows_read, ours.rows_scored, ours.rows_quarantined) == (1506, 1506, 0)
    a, b = (pd.read_parquet(r.root / "data").sort_values("customerID").reset_index(drop=True) for r in (ours, theirs))
    pd.testing.assert_frame_equal(a.drop(columns="scored_at"), b.drop(columns="scored_at"))
    assert 0 < ours.seconds < wall  # the model's load is not in it


def test_the_models_environment_is_checked_without_mlflows_package_scan(trained, tmp_path):
    """The registered model's requirements hold here; a copy that asks for other versions, or
    another Python, is named (MLflow's own check, which reads every installed package's file list,
    is skipped on load)."""
    tmp, _ = trained
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    folder = verified_model("models:/customer-churn/1", tmp_path / "model").path
    assert environment_mismatches(folder) == []
    reqs = folder / "requirements.txt"
    reqs.write_text(reqs.read_text().replace("scikit-learn==", "scikit-learn==0.1 # was ").rstrip("\n")
                    + "\nno-such-package-churn==1.0\n-r other-requirements.txt\n")
    mlmodel = folder / "MLmodel"
    mlmodel.write_text(re.sub(r"python_version: \S+", "python_version: 2.7.18", mlmodel.read_text()))
    found = environment_mismatches(folder)
    assert len(found) == 3, found
    assert found[0] == f"scikit-learn (required: scikit-learn==0.1, installed: {sklearn.__version__})"
    assert found[1] == "no-such-package-churn (required: no-such-package-churn==1.0, not installed)"
    assert found[2].startswith("Python (saved with 2.7.18, running 3.")
