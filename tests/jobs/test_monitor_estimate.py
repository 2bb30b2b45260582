"""churn monitor's performance estimate before the labels, end to end: a model trained on generated
rows, batches of generated rows under a known covariate shift (rows kept with a probability that
depends on x only, so P(y | x) is the generator's), and a batch whose concept changed."""

from __future__ import annotations

import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from churn.cli import summary
from churn.config import load_monitor_job
from churn.data.generate import generate
from churn.jobs.monitor import run as monitor
from churn.jobs.train import run as train
from churn.tracking.monitor_log import estimate_history
from tests.conftest import ROOT, job_spec

# name -> the chance a generated row is kept (a function of its features only)
SHIFTS = {
    "new-customers": lambda f: np.exp(-f["tenure"].astype(float) / 15),
    "long-contracts": lambda f: np.where(f["Contract"] == "Month-to-month", 0.15, 1.0),
}


@pytest.fixture(scope="module")
def generated_model(client, tmp_path_factory):
    """Logistic regression on 6,000 generated rows, registered with its training profile; and
    30,000 more generated rows (another seed) to draw batches from."""
    tmp = tmp_path_factory.mktemp("estimate")
    generate(tmp / "train", rows=6_000, seed=0)
    job = job_spec(tmp, tmp / "train" / "churn-0000.csv", "search.cv=3", "search.repeats=1",
                   "evaluation.plots=false", "model.families=[logistic_regression]", "model.imbalance=[none]",
                   "model.ensemble=0", "model.feature_sums=false", "model.grids={logistic_regression: {C: [1.0]}}")
    train(job, client)
    generate(tmp / "pool", rows=30_000, seed=1)
    pool = pd.read_csv(tmp / "pool" / "churn-0000.csv", dtype=str, keep_default_na=False)
    return tmp, job.tracking.uri, pool


def _write(frame: pd.DataFrame, path, labelled: np.ndarray | None = None):
    out = frame.copy()
    if labelled is not None:
        out.loc[~labelled, "Churn"] = ""
    out.to_csv(path, index=False)
    return path


def _shifted(pool: pd.DataFrame, name: str) -> pd.DataFrame:
    keep = np.random.default_rng(7).random(len(pool)) < SHIFTS[name](pool)
    return pool[keep]


def _spec(tmp, uri, source, *sets: str):
    return load_monitor_job(ROOT / "jobs" / "monitor.yaml", [f"data.source={source}", f"tracking.uri={uri}",
                                                              f"report={tmp / 'reports'}", *sets])


def test_estimate_follows_a_covariate_shift_and_meets_the_labels_later(client, generated_model):
    """Two known covariate shifts: the ROC AUC estimated without labels is within 0.02 of the
    realised one; a batch monitored before and after its labels arrive is one batch in the history,
    its estimate beside its realised figures, and the run logs both."""
    tmp, uri, pool = generated_model
    batch = _shifted(pool, "new-customers")
    early = monitor(_spec(tmp, uri, _write(batch, tmp / "new-customers-unlabelled.csv", np.zeros(len(batch), bool))),
                    client)
    est = early.estimate
    assert est.labelled_rows == 0 and est.realised == {} and est.trust == "unchecked"
    assert est.rows == len(batch) and "tenure" in early.drift.drifted  # the shift is real and seen
    auc = est.estimate["roc_auc"]
    assert auc.low < auc.value < auc.high and auc.high - auc.low < 0.03

    late = monitor(_spec(tmp, uri, _write(batch, tmp / "new-customers.csv")), client)
    assert late.estimate.fingerprint == est.fingerprint  # same rows, same scores
    assert late.estimate.estimate["roc_auc"].value == pytest.approx(auc.value, abs=1e-12)
    assert late.estimate.trust == "checked" and late.estimate.labelled_rows == len(batch)
    gaps = {"new-customers": late.estimate.realised["roc_auc"] - auc.value}
    other = monitor(_spec(tmp, uri, _write(_shifted(pool, "long-contracts"), tmp / "long-contracts.csv")), client)
    assert other.estimate.trust == "checked", other.estimate.reason()
    assert other.drift.prediction.psi > 0.2  # the scores moved
    gaps["long-contracts"] = other.estimate.realised["roc_auc"] - other.estimate.estimate["roc_auc"].value
    assert max(abs(g) for g in gaps.values()) <= 0.02, gaps

    mlflow.set_tracking_uri(uri)
    metrics = mlflow.get_run(late.run_id).data.metrics
    assert metrics["estimated_roc_auc"] == pytest.approx(auc.value)
    assert metrics["realised_roc_auc"] == pytest.approx(late.estimate.realised["roc_auc"])
    history = estimate_history(_spec(tmp, uri, "x").tracking.experiment, "customer-churn")
    assert [h.run_id for h in history[:2]] == [early.run_id, late.run_id]
    assert history[0].fingerprint == history[1].fingerprint and history[0].realised == {}
    html = late.report.read_text()
    assert "Estimated and realised over time" in html
    first_row = html.split("<th>estimate</th></tr>")[1].split("</tr>")[0]
    assert f"{auc.value:.4f}" in first_row and f"{late.estimate.realised['roc_auc']:.4f}" in first_row
    saved = json.loads((late.report.parent / "estimate.json").read_text())
    assert saved["trust"] == "checked" and saved["estimate"]["roc_auc"]["value"] == pytest.approx(auc.value)


def test_a_changed_concept_is_caught_on_a_labelled_slice(client, generated_model):
    """Customers on one- and two-year contracts now churn half the time (P(y | x) changed), and only
    30 % of the rows carry a label: the calibration check on that slice flags the deciles, the
    estimate is marked as not to be trusted in the report, an alert says why, and the realised
    figure is indeed outside the estimate's interval."""
    tmp, uri, pool = generated_model
    rng = np.random.default_rng(3)
    frame = pool.iloc[:15_000].copy()
    long = frame["Contract"] != "Month-to-month"
    frame.loc[long, "Churn"] = np.where(rng.random(int(long.sum())) < 0.5, "Yes", "No")
    res = monitor(_spec(tmp, uri, _write(frame, tmp / "concept.csv", rng.random(len(frame)) < 0.3)), client)
    est = res.estimate
    assert 0.27 < est.labelled_rows / est.rows < 0.33
    assert est.trust == "not trusted" and est.calibration.drifted
    assert any(a.startswith("calibration drift:") for a in res.drift.alerts)
    assert not est.labelled_estimate["roc_auc"].holds(est.realised["roc_auc"])
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(summary.monitor_table(_spec(tmp, uri, "x"), res, 200))
    text = console.file.getvalue()
    assert f"{est.estimate['roc_auc'].value:.4f} ({est.estimate['roc_auc'].low:.4f}-" in text and "not trusted" in text
    assert f"on the {est.labelled_rows:,} labelled rows: estimated / realised" in text
    html = res.report.read_text()
    assert "Not to be trusted for this batch." in html and "<tr class='untrusted'>" in html
    mlflow.set_tracking_uri(uri)
    assert mlflow.get_run(res.run_id).data.tags["estimate_trust"] == "not trusted"
