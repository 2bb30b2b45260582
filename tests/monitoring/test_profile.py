"""Mergeable profiles and the drift statistics computed from them (pure: no cluster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from churn.monitoring.drift import Thresholds, compare, performance
from churn.monitoring.profile import merge_all, numeric_edges, profile_features, profile_scores
from churn.monitoring.report import render
from tests.conftest import ROOT

TELCO = ROOT / "data" / "telco" / "Telco-Customer-Churn.csv"
NUMERIC = ["tenure", "MonthlyCharges", "TotalCharges"]
CATEGORICAL = ["Contract", "InternetService", "PaymentMethod", "gender"]


@pytest.fixture(scope="module")
def telco() -> pd.DataFrame:
    """The Telco table, numbers parsed, with a uint64 row key per customer."""
    frame = pd.read_csv(TELCO)
    frame["TotalCharges"] = pd.to_numeric(frame["TotalCharges"], errors="coerce")
    frame["key"] = pd.util.hash_pandas_object(frame["customerID"], index=False).to_numpy(np.uint64)
    return frame


def _profile(frame: pd.DataFrame, edges: dict, parts: int = 1) -> dict:
    chunks = np.array_split(np.arange(len(frame)), parts)
    return merge_all([profile_features(frame.iloc[c], frame["key"].to_numpy()[c], edges, CATEGORICAL)
                      for c in chunks])


def test_partition_profiles_merge_into_the_whole(telco):
    """Seven partitions' profiles merged equal the profile of all rows (counts and bottom-k sample)."""
    edges = {c: numeric_edges(telco[c]) for c in NUMERIC}
    whole, merged = _profile(telco, edges), _profile(telco, edges, parts=7)
    assert merged["rows"] == whole["rows"] == len(telco)
    for c in NUMERIC:
        assert merged["numeric"][c]["counts"] == whole["numeric"][c]["counts"]
        assert merged["numeric"][c]["missing"] == whole["numeric"][c]["missing"]
        assert merged["numeric"][c]["sample"]["keys"] == whole["numeric"][c]["sample"]["keys"]
    assert merged["numeric"]["TotalCharges"]["missing"] == 11
    assert merged["categorical"] == whole["categorical"]


def test_performance_from_histograms_matches_sklearn():
    """ROC AUC and PR AUC from the per-class score histograms agree with scikit-learn's to 0.002."""
    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.25).astype(int)
    p = 1 / (1 + np.exp(-(rng.normal(size=20_000) + 1.5 * y - 1.2)))
    keys = rng.integers(0, 2**63, size=20_000).astype(np.uint64)
    m = performance(merge_all([profile_scores(p[:9000], keys[:9000], y[:9000]),
                               profile_scores(p[9000:], keys[9000:], y[9000:])])["labelled"])
    assert abs(m["roc_auc"] - roc_auc_score(y, p)) < 0.002
    assert abs(m["pr_auc"] - average_precision_score(y, p)) < 0.002
    assert abs(m["brier"] - np.mean((p - y) ** 2)) < 1e-12


def test_drift_flags_exactly_the_shifted_features(telco):
    """Reference: half the customers. Batch = the other half: nothing flagged. Batch with monthly
    charges up 40 % and most customers moved to two-year contracts: exactly those two flagged."""
    rng = np.random.default_rng(1)
    ref_rows = rng.random(len(telco)) < 0.5
    reference, batch = telco[ref_rows], telco[~ref_rows].copy()
    edges = {c: numeric_edges(reference[c]) for c in NUMERIC}
    ref_profile = _profile(reference, edges)
    calm = compare(ref_profile, _profile(batch, edges, parts=3), Thresholds())
    assert calm.drifted == [] and calm.alerts == []
    assert max(f.psi for f in calm.features) < 0.05
    assert sum(f.p_value < 0.001 for f in calm.features) <= 1  # the tests see noise as noise

    batch["MonthlyCharges"] = batch["MonthlyCharges"] * 1.4
    moved = rng.random(len(batch)) < 0.6
    batch.loc[moved, "Contract"] = "Two year"
    shifted = compare(ref_profile, _profile(batch, edges, parts=3), Thresholds())
    assert sorted(shifted.drifted) == ["Contract", "MonthlyCharges"]
    by_name = {f.feature: f for f in shifted.features}
    assert by_name["MonthlyCharges"].p_value < 1e-6 and by_name["Contract"].p_value < 1e-6
    assert by_name["tenure"].p_value > 1e-3
    assert len(shifted.alerts) == 2


def test_unseen_levels_and_blanks_count_as_drift(telco):
    """A level the reference never saw, and blanks where there were none, move the PSI."""
    edges = {c: numeric_edges(telco[c]) for c in NUMERIC}
    batch = telco.copy()
    batch.loc[batch.index[:3000], "PaymentMethod"] = "Crypto"
    batch.loc[batch.index[:3000], "tenure"] = np.nan
    result = compare(_profile(telco, edges), _profile(batch, edges), Thresholds(psi=0.2))
    assert {"PaymentMethod", "tenure"} <= set(result.drifted)
    pay = next(f for f in result.features if f.feature == "PaymentMethod")
    assert pay.labels[-1] == "unseen level" and pay.batch[-1] > 0.4


@pytest.mark.parametrize(("rows", "note"), [(0, "no rows to compare"), (1, "1 rows: too few to compare, need 100"),
                                            (99, "99 rows: too few to compare, need 100")])
def test_a_batch_too_small_gets_a_note_not_a_drift_verdict(telco, rows, note):
    """A header-only or one-row batch used to show PSI 7-9 and KS nan on every feature; now: a note,
    no feature compared, no alert."""
    edges = {c: numeric_edges(telco[c]) for c in NUMERIC}
    result = compare(_profile(telco, edges), _profile(telco.iloc[:rows], edges), Thresholds(), min_rows=100)
    assert (result.note, result.features, result.prediction, result.alerts) == (note, [], None, [])
    html = render(result, "t", "m", "b", "now")
    assert note in html and "Feature drift" not in html
    enough = compare(_profile(telco, edges), _profile(telco.iloc[:100], edges), Thresholds(), min_rows=100)
    assert enough.note is None and len(enough.features) == len(NUMERIC) + len(CATEGORICAL)


def test_quarantined_rows_are_drift_by_reason_and_column(telco):
    """Rows the rules refuse never reach the profile: 40 % of the rows read with an unseen Contract
    level cross ``quarantined`` and are named; 0.5 % out-of-range tenure is under 1 % and is not."""
    edges = {c: numeric_edges(telco[c]) for c in NUMERIC}
    clean = telco.iloc[:600]
    counts = {"unknown_category:Contract": 400, "out_of_range:tenure": 5}
    result = compare(_profile(telco, edges), _profile(clean, edges), Thresholds(quarantined=0.01), rows_read=1005,
                     quarantined=counts, min_rows=100)
    assert result.alerts == ["quarantine: unknown_category:Contract in 400 of 1,005 rows read (39.8%) >= 1.0%"]
    html = render(result, "t", "m", "b", "now", 0.01)
    assert "<tr class='flag'><td>unknown_category</td><td>Contract</td><td>400</td>" in html
    assert "<tr class=''><td>out_of_range</td><td>tenure</td><td>5</td>" in html
    off = compare(_profile(telco, edges), _profile(clean, edges), Thresholds(quarantined=None), rows_read=1005,
                  quarantined=counts)
    assert off.alerts == [] and off.quarantined == counts
