"""Batch scoring on the cluster equals in-memory predict_proba, and its counts reconcile."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from churn.config import ScoreSpec, load_score_job
from churn.jobs import score as score_job
from churn.jobs.train import run
from churn.serving.reasons import explain, reason_columns, top_reasons
from tests.conftest import ROOT, job_spec


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory, telco_subset):
    """A small registered model (logistic regression on the Telco subset) and its store."""
    tmp = tmp_path_factory.mktemp("batch")
    job = job_spec(tmp, telco_subset, "search.cv=2", "model.families=[logistic_regression]",
                   "evaluation.plots=false")
    return tmp, run(job, client)


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

    res = score_job.run(_spec(tmp, src), client)
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
