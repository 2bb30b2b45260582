"""Score summaries against scikit-learn on data small enough to gather: every metric equal within
its stated error bound (exact where exact), any merge order equal to one summary of all rows."""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    classification_report,
    confusion_matrix,
    get_scorer,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from churn.config import EconomicsSpec
from churn.modeling.evaluate import contact_profit, evaluation_from, lift_table, precision_at_top
from churn.modeling.summary import (
    ScoreSummary,
    _bin_of,
    _edges,
    merge,
    score_from,
    summaries_on_cluster,
    summarise_on_cluster,
)
from churn.serving.calibration import ChurnClassifier, ScoreCalibrator

THRESHOLDS = (0.17, 0.5)


def _continuous(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.25).astype(int)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) * 1.3 + 1.6 * y - 1.8)))


def _tied(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic-like: 12 distinct probabilities, many ties across the classes."""
    y, p = _continuous(n, seed)
    return y, np.round(p * 11) / 11


def _extreme(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of exactly 0 and 1, below and above the logit span, and crowded near 0."""
    y, p = _continuous(n, seed)
    p = p ** 6
    p[:40] = [0.0, 1.0, 1e-12, 1 - 1e-12] * 10
    return y, p


DATA = {"continuous": _continuous, "tied": _tied, "extreme": _extreme}


@pytest.fixture(params=[(name, bins) for name in DATA for bins in (16, 512, None)],
                ids=lambda v: f"{v[0]}-{v[1] or 'default'}bins")
def summarised(request):
    name, bins = request.param
    y, p = DATA[name](6000, seed=len(name))
    span = None if bins is None else 8.0
    return y, p, ScoreSummary.of(y, p, THRESHOLDS, bins=bins, span=span)


def test_bins_are_searchsorted_over_the_edges():
    """The logit guess, corrected, puts each probability in the bin a binary search over the edges gives."""
    edges = _edges(4096, 12.0)
    p = np.r_[np.linspace(0, 1, 10_001), edges, np.nextafter(edges, 0), np.nextafter(edges, 1), 1e-300, 1 - 1e-17]
    p = np.clip(p, 0, 1)
    assert (_bin_of(p, 4096, 12.0) == np.searchsorted(edges, p, side="right")).all()


def test_exact_metrics_equal_scikit_learn(summarised):
    """Brier, log loss, the confusion matrices, the report and the counts are exact."""
    y, p, s = summarised
    assert s.brier() == pytest.approx(brier_score_loss(y, p), rel=1e-12)
    assert s.log_loss() == pytest.approx(log_loss(y, p), rel=1e-12)
    assert (s.rows, s.positives) == (len(y), int(y.sum()))
    for t in THRESHOLDS:
        assert list(s.confusion(t)) == confusion_matrix(y, (p >= t).astype(int), labels=[0, 1]).ravel().tolist()
    ev = evaluation_from(s, 0.5, f1_cut=0.17)
    pred = (p >= 0.5).astype(int)
    assert ev.report == classification_report(y, pred, target_names=["stay", "churn"], digits=4, zero_division=0)
    tp = int(((p >= 0.17) & (y == 1)).sum())
    assert ev.metrics["f1_at_f1_threshold"] == pytest.approx(2 * tp / ((p >= 0.17).sum() + y.sum()), abs=1e-15)


def test_histogram_metrics_are_within_their_bounds(summarised):
    """ROC AUC, average precision, precision at top k and lift differ from the exact values by no
    more than the bounds reported with them; ties-only bins add no error."""
    y, p, s = summarised
    auc, auc_bound = s.roc_auc()
    ap, ap_bound = s.average_precision()
    assert abs(auc - roc_auc_score(y, p)) <= auc_bound + 1e-12
    assert abs(ap - average_precision_score(y, p)) <= ap_bound + 1e-12
    if len(np.unique(p)) <= 12 and s.bins >= 512:  # every bin holds one value: exact
        assert auc_bound == ap_bound == 0
    order = np.argsort(-p, kind="stable")
    for k in (0.01, 0.05, 0.1, 0.5):
        value, bound = s.precision_at(k)
        assert abs(value - precision_at_top(y[order], p[order], k)) <= bound + 1e-12
    exact, ours = lift_table(y[order], p[order]), s.lift()
    assert (exact["rows"] == ours["rows"]).all()
    assert (abs(exact["churn_rate"] - ours["churn_rate"]) <= ours["churn_rate_error_bound"] + 1e-12).all()
    assert (abs(exact["cumulative_gain"] - ours["cumulative_gain"]) <= ours["cumulative_gain_error_bound"]
            + 1e-12).all()


def test_the_default_bins_keep_the_bounds_tiny():
    """With 65,536 logit bins, 20,000 rows of overlapping classes: ROC AUC within 1e-4."""
    y, p = _continuous(20_000, seed=5)
    s = ScoreSummary.of(y, p)
    assert s.roc_auc()[1] < 1e-4 and s.average_precision()[1] < 1e-3
    assert abs(s.roc_auc()[0] - roc_auc_score(y, p)) < 1e-6


def test_curves_are_points_of_scikit_learns_curves(summarised):
    """Each ROC and PR point of the summary is a point of scikit-learn's full curve, and the ROC
    curve's area is the summary's ROC AUC."""
    y, p, s = summarised
    fpr, tpr = s.roc_curve()
    sk_fpr, sk_tpr, _ = roc_curve(y, p, drop_intermediate=False)
    assert {(round(a, 12), round(b, 12)) for a, b in zip(fpr, tpr, strict=True)} <= \
        {(round(a, 12), round(b, 12)) for a, b in zip(sk_fpr, sk_tpr, strict=True)}
    assert np.trapezoid(tpr, fpr) == pytest.approx(s.roc_auc()[0], abs=1e-12)
    precision, recall = s.pr_curve()
    sk_p, sk_r, _ = precision_recall_curve(y, p, drop_intermediate=False)
    assert {(round(a, 12), round(b, 12)) for a, b in zip(precision, recall, strict=True)} <= \
        {(round(a, 12), round(b, 12)) for a, b in zip(sk_p, sk_r, strict=True)}


def test_calibration_points_are_exact_for_their_groups(summarised):
    """Each point is the mean probability and churn rate of the rows in its group of fine bins."""
    y, p, s = summarised
    true, pred, rows = s.calibration_curve(10)
    idx = _bin_of(p, s.bins, s.span)
    count = np.bincount(idx, minlength=s.bins + 2)
    middle = np.cumsum(count) - count / 2
    group = np.minimum((middle * 10 / len(y)).astype(int), 9)[idx]
    kept = np.unique(group)
    np.testing.assert_allclose(rows, [np.sum(group == g) for g in kept])
    np.testing.assert_allclose(true, [y[group == g].mean() for g in kept], rtol=1e-12)
    np.testing.assert_allclose(pred, [p[group == g].mean() for g in kept], rtol=1e-12)
    assert len(kept) >= 5  # quantile groups, not one


def test_profit_and_economics_are_exact():
    y, p = _continuous(3000, seed=9)
    econ = EconomicsSpec()
    ev = evaluation_from(ScoreSummary.of(y, p, (0.3,)), 0.3, economics=econ)
    gain = contact_profit(y, econ)
    assert ev.metrics["profit"] == pytest.approx(gain[p >= 0.3].sum(), rel=1e-12)
    assert ev.metrics["profit_contact_all"] == pytest.approx(gain.sum(), rel=1e-12)
    assert ev.metrics["contacted_fraction"] == (p >= 0.3).mean()
    assert ev.confusion == confusion_matrix(y, (p >= 0.3).astype(int)).tolist()


class _Stored(ClassifierMixin, BaseEstimator):
    """Stored probabilities replayed to a scikit-learn scorer (X: row positions)."""

    classes_ = np.array([0, 1])

    def __init__(self, proba: np.ndarray | None = None, threshold: float = 0.5):
        self.proba, self.threshold = proba, threshold

    def predict_proba(self, X):
        q = self.proba[np.asarray(X).ravel()]
        return np.column_stack([1 - q, q])

    def predict(self, X):
        return (self.proba[np.asarray(X).ravel()] >= self.threshold).astype(int)


@pytest.mark.parametrize("scoring", ["roc_auc", "roc_auc_ovr", "average_precision", "neg_brier_score", "neg_log_loss",
                                     "d2_brier_score", "d2_log_loss_score", "accuracy", "f1", "balanced_accuracy",
                                     "matthews_corrcoef", "precision", "recall", "jaccard"])
def test_score_from_equals_the_scikit_learn_scorer(scoring):
    """The job's search.scoring from a summary equals scikit-learn's scorer on the rows (the histogram
    ones within the ROC AUC / AP bound), with its sign."""
    y, p = _tied(4000, seed=3)  # ties only: the histogram metrics are exact too
    s = ScoreSummary.of(y, p, (0.5,))
    expected = get_scorer(scoring)(_Stored(p, 0.5), np.arange(len(y)).reshape(-1, 1), y)
    assert score_from(s, scoring, 0.5) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_merging_in_any_order_equals_one_summary():
    """Partitions (one empty) merged pairwise, in a fan-in and in shuffled orders all equal the
    summary of every row: counts exactly, sums to float rounding."""
    y, p = _continuous(5000, seed=11)
    whole = ScoreSummary.of(y, p, THRESHOLDS)
    cuts = np.sort(np.random.default_rng(0).choice(np.arange(1, 5000), 8, replace=False))
    parts = [ScoreSummary.of(a, b, THRESHOLDS) for a, b in zip(np.split(y, cuts), np.split(p, cuts), strict=True)]
    parts.append(ScoreSummary.of(y[:0], p[:0], THRESHOLDS))
    rng = np.random.default_rng(1)
    orders = [merge(*parts), merge(*parts[::-1])]
    for _ in range(3):
        shuffled = [parts[i] for i in rng.permutation(len(parts))]
        while len(shuffled) > 1:
            shuffled = [merge(*shuffled[i:i + 2]) for i in range(0, len(shuffled), 2)]
        orders.append(shuffled[0])
    for m in orders:
        for name in ("pos", "neg", "lo", "hi", "tp", "fp"):
            assert (getattr(m, name) == getattr(whole, name)).all(), name
        np.testing.assert_allclose(m.sum_p, whole.sum_p, rtol=1e-12)
        assert m.roc_auc() == whole.roc_auc() and m.lift().equals(whole.lift())
        assert m.brier() == pytest.approx(whole.brier(), rel=1e-12)
        assert m.log_loss() == pytest.approx(whole.log_loss(), rel=1e-12)


def test_the_size_does_not_grow_with_the_rows():
    small, large = _continuous(100, seed=1), _continuous(100_000, seed=1)
    assert ScoreSummary.of(*small, THRESHOLDS).nbytes == ScoreSummary.of(*large, THRESHOLDS).nbytes


def test_bad_input_gets_one_clear_message():
    y, p = _continuous(100, seed=1)
    s = ScoreSummary.of(y, p, (0.5,))
    with pytest.raises(ValueError, match="threshold 0.3 was not counted"):
        s.confusion(0.3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        ScoreSummary.of(y, np.r_[p[:-1], np.nan])
    with pytest.raises(ValueError, match="needs rows of both classes"):
        ScoreSummary.of(np.zeros(5), np.linspace(0, 1, 5)).roc_auc()
    with pytest.raises(ValueError, match="cannot be merged"):
        s.merge(ScoreSummary.of(y, p, (0.4,)))
    with pytest.raises(ValueError, match="top_k_accuracy' cannot be computed"):
        score_from(s, "top_k_accuracy", 0.5)


def _frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    frame["_label"] = (frame["a"] + rng.normal(size=n) > 0.8).astype("int8")
    return frame


def test_summaries_on_the_cluster_equal_the_summary_in_memory(client):
    """Scored, summarised and merged on the workers (one partition empty), the calibrated and the raw
    summaries equal those of the gathered rows."""
    frame = _frame(3000, seed=2)
    X, y = frame[["a", "b"]], frame["_label"].to_numpy()
    member = LogisticRegression().fit(X, y)
    calibrator = ScoreCalibrator("sigmoid", (True,)).fit(member.predict_proba(X)[:, 1:], y)
    model = ChurnClassifier([member], calibrator, ["logistic_regression"])
    ddf = dd.from_pandas(frame, npartitions=7)
    ddf = dd.concat([ddf, ddf[ddf["a"] > 100]])  # an empty partition at the end
    got = summaries_on_cluster(ddf, model, ["a", "b"], client, (0.5,), raw=True)
    expected = {"proba": ScoreSummary.of(y, model.predict_proba(X)[:, 1], (0.5,)),
                "raw": ScoreSummary.of(y, member.predict_proba(X)[:, 1], (0.5,))}
    for key, want in expected.items():
        for name in ("pos", "neg", "tp", "fp"):
            assert (getattr(got[key], name) == getattr(want, name)).all()
        assert got[key].brier() == pytest.approx(want.brier(), rel=1e-12)
    plain = summarise_on_cluster(ddf, member, ["a", "b"], client, (0.5,))
    assert (plain.pos == expected["raw"].pos).all() and plain.rows == 3000
