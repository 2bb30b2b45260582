"""The registered model's calibration map and classifier wrapper."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from churn.serving.calibration import ChurnClassifier, FoldAverage, ScoreCalibrator, member_scores
from churn.serving.trusted import dump_pipeline, load_pipeline


@pytest.fixture
def overconfident() -> tuple[np.ndarray, np.ndarray]:
    """True churn probabilities p and labels drawn from them; the scores p**3 understate every risk."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.02, 0.9, size=4000)
    y = (rng.random(4000) < p).astype(int)
    return p, y


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_map_repairs_distorted_probabilities(overconfident, method):
    """Fitted on distorted scores, the map brings the mean prediction back to the churn rate and
    lowers the Brier score; isotonic output never decreases with the score."""
    p, y = overconfident
    scores = p ** 3
    cal = ScoreCalibrator(method).fit(scores, y)
    out = cal.predict(scores)
    assert abs(out.mean() - y.mean()) < 0.01
    assert np.mean((out - y) ** 2) < np.mean((scores - y) ** 2) - 0.01
    order = np.argsort(scores)
    assert (np.diff(out[order]) >= -1e-12).all()


def test_decision_values_need_a_map():
    """SVC decision values are not probabilities: 'none' refuses them, sigmoid maps them into (0, 1)."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = (X[:, 0] + rng.normal(scale=0.5, size=300) > 0).astype(int)
    svc = SVC().fit(X, y)
    d = member_scores(svc, X)
    with pytest.raises(ValueError, match="need a calibration map"):
        ScoreCalibrator("none", (False,)).fit(d, y)
    out = ScoreCalibrator("sigmoid", (False,)).fit(d, y).predict(d)
    assert ((out > 0) & (out < 1)).all()
    assert (np.diff(out[np.argsort(d)]) >= 0).all()  # the order of the scores is kept


def test_classifier_round_trips_with_trusted_types(tmp_path):
    """Two member pipelines and a stacking map: saved and loaded with the trusted list, same output."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 4))
    y = (X[:, 0] - X[:, 1] + rng.normal(size=400) > 0).astype(int)
    members = [Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(X, y),
               Pipeline([("scale", StandardScaler()), ("model", SVC())]).fit(X, y)]
    model = ChurnClassifier(members, None, ["lr", "svm"])
    model.calibrator = ScoreCalibrator("sigmoid", (True, False)).fit(model.scores(X), y)
    path = str(tmp_path / "model.skops")
    dump_pipeline(model, path)
    loaded = load_pipeline(path)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-12)
    assert np.allclose(model.predict_proba(X).sum(axis=1), 1)
    with pytest.raises(TypeError, match="assembled from fitted members"):
        model.fit(X, y)


def _fold_fits(make, X, y, k=4):
    """``make()`` fitted on each of k stratified folds' training rows, with plain scikit-learn."""
    return [make().fit(X[train], y[train])
            for train, _ in StratifiedKFold(k, shuffle=True, random_state=0).split(X, y)]


def test_a_bagged_member_is_the_mean_log_odds_of_its_fold_models(tmp_path):
    """FoldAverage's probability is the logistic of its fold models' mean log-odds (decision values
    for an SVC, which has no probabilities), computed here by hand from plain scikit-learn fits; it
    is not their mean probability. Inside a stack it saves and loads with the trusted types alone."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(600, 3))
    y = (X[:, 0] + 0.5 * X[:, 2] + rng.normal(size=600) > 0.8).astype(int)
    lr_folds = _fold_fits(lambda: Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(C=0.05))]),
                          X, y)
    svm_folds = _fold_fits(lambda: Pipeline([("scale", StandardScaler()), ("model", SVC(C=0.5))]), X, y)
    lr, svm = FoldAverage(lr_folds), FoldAverage(svm_folds)
    by_hand = expit(np.mean([logit(m.predict_proba(X)[:, 1]) for m in lr_folds], axis=0))
    np.testing.assert_allclose(lr.predict_proba(X)[:, 1], by_hand, rtol=0, atol=1e-12)
    mean_proba = np.mean([m.predict_proba(X)[:, 1] for m in lr_folds], axis=0)
    assert np.abs(by_hand - mean_proba).max() > 1e-4  # the two averages differ on these models
    assert not hasattr(svm, "predict_proba") and hasattr(lr, "predict_proba")
    np.testing.assert_allclose(member_scores(svm, X), np.mean([m.decision_function(X) for m in svm_folds], axis=0),
                               rtol=0, atol=1e-12)
    np.testing.assert_array_equal(lr.predict(X), (by_hand >= 0.5).astype(int))
    model = ChurnClassifier([lr, svm], None, ["lr", "svm"])
    model.calibrator = ScoreCalibrator("sigmoid", (True, False)).fit(model.scores(X), y)
    path = str(tmp_path / "bagged.skops")
    dump_pipeline(model, path)
    loaded = load_pipeline(path)
    assert isinstance(loaded.members[0], FoldAverage) and len(loaded.members[1].members) == 4
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), rtol=0, atol=1e-12)
    with pytest.raises(TypeError, match="assembled from fitted fold models"):
        lr.fit(X, y)
