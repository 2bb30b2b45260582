"""The large telecom shape: reproducible bytes, a truth file of exactly the written rows, a label
drawn from that truth, and CSVs its job's schema ingests whole."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from churn.data import telecom
from churn.data.ingest import ingest
from tests.conftest import ROOT, job_spec

JOB = ROOT / "jobs" / "train-telecom-large.yaml"


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*"))}


def _read(result) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f, dtype=str, keep_default_na=False) for f in result.files], ignore_index=True)


def test_same_seed_gives_identical_bytes(tmp_path):
    """CSVs, truth and summary: the same bytes for one seed, other bytes for another seed."""
    telecom.generate_telecom(tmp_path / "a", rows=3_000, files=2, seed=7)
    telecom.generate_telecom(tmp_path / "b", rows=3_000, files=2, seed=7)
    telecom.generate_telecom(tmp_path / "c", rows=3_000, files=2, seed=8)
    a = _digest(tmp_path / "a")
    assert set(a) == {"telecom-0000.csv", "telecom-0001.csv", telecom.TRUTH_FILE, "expected.json"}
    assert a == _digest(tmp_path / "b")
    assert a["telecom-0000.csv"] != _digest(tmp_path / "c")["telecom-0000.csv"]


def test_truth_is_the_true_probability_of_each_written_row(tmp_path):
    """truth.parquet holds one row per CSV row, same ids and labels, and p_true is the known logit
    of the features as written (so it is the truth of these rows, not of other draws)."""
    res = telecom.generate_telecom(tmp_path, rows=2_500, files=3, seed=1)
    frame = _read(res)
    truth = pq.read_table(res.truth).to_pandas()
    assert list(frame.columns) == telecom.COLUMNS
    assert telecom.ID not in telecom.NUMERIC + telecom.CATEGORICAL and "p_true" not in frame.columns
    assert frame[telecom.ID].is_unique and truth[telecom.ID].tolist() == frame[telecom.ID].tolist()
    assert truth[telecom.LABEL].tolist() == (frame[telecom.LABEL] == "Yes").astype(int).tolist()
    w = telecom.world()
    levels = {**telecom.LOW, **{c: list(v) for c, v in w.names.items()}}
    parsed = {c: frame[c].astype(float).to_numpy() for c in telecom.NUMERIC}
    parsed |= {c: pd.Categorical(frame[c], categories=levels[c]).codes.astype(np.int64) for c in telecom.CATEGORICAL}
    assert all((parsed[c] >= 0).all() for c in telecom.CATEGORICAL)
    p = 1 / (1 + np.exp(-telecom.true_logit(parsed)))
    np.testing.assert_allclose(truth["p_true"].to_numpy(), p, rtol=0, atol=1e-12)


def test_label_rate_matches_the_mean_true_probability(tmp_path):
    """The label is drawn from p_true: the churn rate is its mean within 4 standard errors, and
    rows with a higher p_true churn more often."""
    res = telecom.generate_telecom(tmp_path, rows=60_000, files=1, seed=5)
    truth = pq.read_table(res.truth).to_pandas()
    y, p = truth[telecom.LABEL].to_numpy(), truth["p_true"].to_numpy()
    assert 0.18 < y.mean() < 0.32
    assert abs(y.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(y))
    high = p > np.median(p)
    assert y[high].mean() > 2 * y[~high].mean()


def test_high_cardinality_columns_are_zipf_with_many_levels(tmp_path):
    """Handset models in the thousands, regions in the hundreds, tariffs in the tens; the most
    frequent handset is far more common than the median seen one."""
    res = telecom.generate_telecom(tmp_path, rows=40_000, files=1, seed=2)
    frame = _read(res)
    seen = {c: frame[c].value_counts() for c in telecom.HIGH}
    assert len(seen["handset_model"]) > 1_500 and 150 < len(seen["region"]) <= 400
    assert 20 <= len(seen["tariff_plan"]) <= 50
    assert seen["handset_model"].iloc[0] > 50 * seen["handset_model"].median()


@pytest.mark.cluster
def test_its_job_schema_ingests_every_row(client, tmp_path):
    """The CSVs pass `churn ingest` with jobs/train-telecom-large.yaml's schema: none quarantined."""
    res = telecom.generate_telecom(tmp_path / "csv", rows=4_000, files=2, seed=3)
    job = job_spec(tmp_path, tmp_path / "csv" / "*.csv", "model.families=[logistic_regression]", base=JOB)
    ds = ingest(job, client)
    assert (ds.manifest.rows_read, ds.manifest.rows_quarantined, ds.manifest.rows_kept) == (4_000, 0, 4_000)
    assert res.rows == 4_000
