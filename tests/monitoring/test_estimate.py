"""The label-free performance estimate (CBPE) from mergeable block sums (pure: no cluster)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from churn.monitoring.estimate import Cells, EstimateSummary, alerts, assess, estimate, merge_all, realised


def _scores(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) * 1.3 - 1.1)))
    return p, rng.integers(0, 2**63, size=n).astype(np.uint64)


def test_hand_computed_case():
    """p = 0.9, 0.2, 0.6 at threshold 0.5: 1.5 churners expected among the 2 contacted, of 1.7 in
    all; ordered pairs 0.9*0.8 + 0.9*0.4 + 0.6*0.8 = 1.56 of 1.7*1.3 - (0.09 + 0.16 + 0.24) = 1.72."""
    est = estimate(Cells.of(np.array([0.9, 0.2, 0.6]), 0.5), draws=200)
    assert est["churners_contacted"].value == pytest.approx(1.5)
    assert est["precision"].value == pytest.approx(0.75)
    assert est["recall"].value == pytest.approx(1.5 / 1.7)
    assert est["roc_auc"].value == pytest.approx(1.56 / 1.72)
    assert 0 <= est["churners_contacted"].low <= 1.5 <= est["churners_contacted"].high <= 2


def test_block_summaries_merge_into_the_whole():
    """Three blocks' sums merged equal the whole batch's (labels on part of the rows); the
    fingerprint is the same whatever the blocks, and moves when one score does."""
    p, keys = _scores(9_000)
    y = (np.random.default_rng(1).random(9_000) < p).astype(float)
    y[::4] = np.nan  # a quarter without a label
    whole = EstimateSummary.of(p, keys, 0.3, y)
    parts = merge_all([EstimateSummary.of(p[c], keys[c], 0.3, y[c]) for c in np.array_split(np.arange(9_000), 3)])
    for cells in ("every", "labelled"):
        for a in ("n", "sum_p", "sum_pq", "pos"):
            np.testing.assert_allclose(getattr(getattr(parts, cells), a), getattr(getattr(whole, cells), a),
                                       rtol=1e-12, atol=1e-9)
    assert parts.fingerprint == whole.fingerprint and whole.labelled.rows == 6_750
    moved = p.copy()
    moved[17] += 0.01
    assert EstimateSummary.of(moved, keys, 0.3, y).fingerprint != whole.fingerprint


def test_estimate_is_the_expectation_and_the_interval_covers_the_realised_figure():
    """Labels drawn from the probabilities 300 times: the mean realised ROC AUC, precision, recall
    and churners contacted match the estimates, about 95 % of the draws fall in each interval, and
    the realised figures from the cells match scikit-learn's."""
    p, _ = _scores(4_000, seed=2)
    t = 0.35
    est = estimate(Cells.of(p, t))
    rng = np.random.default_rng(3)
    draws = {k: [] for k in est}
    for _ in range(300):
        y = (rng.random(len(p)) < p).astype(int)
        got = realised(Cells.of(p, t, y))
        for k, v in got.items():
            draws[k].append(v)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=5e-4)  # ties within a fine bin count 1/2
    assert got["precision"] == pytest.approx(precision_score(y, p >= t))
    assert got["recall"] == pytest.approx(recall_score(y, p >= t))
    assert got["churners_contacted"] == int(((p >= t) & (y == 1)).sum())
    for k, values in draws.items():
        values = np.asarray(values)
        spread = values.std()
        assert abs(values.mean() - est[k].value) < 0.25 * spread, k
        covered = np.mean([est[k].holds(v) for v in values])
        assert 0.9 <= covered <= 0.99, (k, covered)


def test_calibration_drift_on_a_labelled_slice_is_flagged():
    """Labels from the probabilities: checked. Labels where the low scorers churn half the time (a
    changed concept) on a 20 % slice: the low deciles are flagged, and the estimate is not trusted;
    with the check switched off it is unchecked."""
    p, keys = _scores(20_000, seed=4)
    rng = np.random.default_rng(5)
    y = (rng.random(len(p)) < p).astype(float)
    assert assess(EstimateSummary.of(p, keys, 0.3, y), 0.05, draws=200).trust == "checked"

    changed = np.where(p < 0.15, (rng.random(len(p)) < 0.5).astype(float), y)
    changed[rng.random(len(p)) >= 0.2] = np.nan
    res = assess(EstimateSummary.of(p, keys, 0.3, changed), 0.05, draws=200)
    assert res.trust == "not trusted" and 3_800 < res.labelled_rows < 4_200
    low = [i for i, d in enumerate(res.calibration.deciles, 1) if d.high <= 0.15]
    assert low and set(low) <= set(res.calibration.drifted)
    assert res.reason().startswith("calibration drift: ")
    assert alerts(res, 0.8, 0.05) == [res.reason()]
    assert assess(EstimateSummary.of(p, keys, 0.3, changed), None, draws=200).trust == "unchecked"


def test_an_estimated_drop_without_labels_is_an_alert():
    """No labels: an estimated ROC AUC 0.05 or more below the reference is an alert; not otherwise."""
    p, keys = _scores(5_000)
    res = assess(EstimateSummary.of(p, keys, 0.3), 0.05, draws=200)
    auc = res.estimate["roc_auc"].value
    assert res.trust == "unchecked" and res.labelled_rows == 0
    [alert] = alerts(res, auc + 0.06, 0.05)
    assert alert.startswith(f"estimated performance (no labels): ROC AUC {auc:.4f} (")
    assert alerts(res, auc + 0.04, 0.05) == [] and alerts(res, auc + 0.06, None) == []


def test_a_labelled_slice_without_churners_a_tiny_one_and_an_unlabelled_drop():
    """Labelled rows that are all stayers: realised recall and ROC AUC are NaN, no error. Ten labelled
    rows, one churner at p = 0.01: too few expected churners in any decile to call drift. A batch
    whose estimated ROC AUC fell is alerted although a handful of its rows carry labels."""
    p, keys = _scores(20_000)
    y = np.full(20_000, np.nan)
    y[:3] = 0.0
    est = assess(EstimateSummary.of(p, keys, 0.3, y), calibration_gap=0.05, draws=50)
    assert est.labelled_rows == 3 and np.isnan(est.realised["recall"]) and np.isnan(est.realised["roc_auc"])
    tiny_p = np.r_[np.full(9, 0.3), 0.01]
    tiny_y = np.r_[np.zeros(9), 1.0]
    tiny = assess(EstimateSummary.of(tiny_p, keys[:10], 0.5, tiny_y), calibration_gap=0.05, draws=50)
    assert tiny.trust == "checked" and not tiny.calibration.drifted
    labelled = y.copy()
    labelled[:4] = (p[:4] > 0.5).astype(float)
    some = assess(EstimateSummary.of(p, keys, 0.3, labelled), calibration_gap=0.05, draws=50)
    auc = some.estimate["roc_auc"].value
    got = alerts(some, reference_auc=auc + 0.2, roc_auc_drop=0.05)
    assert len(got) == 1 and got[0].startswith("estimated performance (19,996 rows unlabelled): ROC AUC")
    assert alerts(some, reference_auc=auc + 0.01, roc_auc_drop=0.05) == []
