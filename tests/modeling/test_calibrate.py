"""Choosing the champion among families and their stack, and its calibration, from OOF scores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from churn.modeling.calibrate import STACK, calibrate, choose_champion, fold_scores
from churn.modeling.search import folds


@pytest.fixture
def two_views() -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """Labels and two families' OOF probabilities, each seeing a different half of the signal."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=3000), rng.normal(size=3000)
    y = (a + b + rng.normal(scale=0.7, size=3000) > 1.0).astype(int)
    pa, pb = 1 / (1 + np.exp(-(a - 1))), 1 / (1 + np.exp(-(b - 1)))
    splits = list(folds(5, 0).split(np.zeros((3000, 1)), y))
    return y, pa, pb, splits


def _result(y, p, splits, proba=True):
    per_fold = fold_scores(y, p, splits, "roc_auc")
    return SimpleNamespace(best_score=float(per_fold.mean()), std_score=float(per_fold.std()), oof_proba=p,
                           proba_scores=proba)


def test_stack_wins_when_members_see_different_signal(two_views):
    """Each family alone is weaker than the stack of both: the stack becomes champion, with the
    sigmoid map as its combiner and calibrated OOF probabilities for the threshold."""
    y, pa, pb, splits = two_views
    results = {"a": _result(y, pa, splits), "b": _result(y, pb, splits)}
    champ = choose_champion(results, y, [splits], "roc_auc", ensemble=2)
    assert champ.name == STACK and sorted(champ.members) == ["a", "b"]
    assert champ.cv_score > max(r.best_score for r in results.values()) + 0.05
    assert champ.calibration.method == "sigmoid"
    assert abs(champ.oof_proba.mean() - y.mean()) < 0.01


def test_no_stack_when_switched_off_and_ties_keep_the_first(two_views):
    """ensemble=0: the best family wins; equal scores keep the family listed first."""
    y, pa, _, splits = two_views
    results = {"first": _result(y, pa, splits), "second": _result(y, pa.copy(), splits)}
    champ = choose_champion(results, y, [splits], "roc_auc", ensemble=0)
    assert champ.name == "first" and champ.stack_score is None


def test_a_family_flattered_by_the_search_folds_loses_on_fresh_folds(two_views):
    """A family as good as the best on the search's folds but weak on fresh ones ('lucky') wins
    on the search's folds alone and loses once the fresh repeat counts; a family without the
    repeat's scores makes the choice fall back to the search's folds."""
    y, pa, _, splits = two_views
    fresh = list(folds(5, 1).split(np.zeros((len(y), 1)), y))
    steady = _result(y, pa, splits)
    steady.rescored_oof = [pa]
    lucky = _result(y, pa + 1e-3 * y, splits)  # a hair better on every search fold
    noise = np.random.default_rng(5).normal(scale=0.5, size=len(y))
    lucky.rescored_oof = [np.clip(pa + noise, 1e-3, 1 - 1e-3)]  # far weaker on the fresh folds
    results = {"lucky": lucky, "steady": steady}
    assert choose_champion(results, y, [splits], "roc_auc", ensemble=0).name == "lucky"
    champ = choose_champion(results, y, [splits, fresh], "roc_auc", ensemble=0)
    assert champ.name == "steady" and champ.repeats == 2
    assert champ.family_scores["lucky"] < champ.family_scores["steady"] - 0.01
    steady.rescored_oof = []
    back = choose_champion(results, y, [splits, fresh], "roc_auc", ensemble=0)
    assert (back.name, back.repeats) == ("lucky", 1)


def test_families_rank_on_their_scorer_values_not_on_raw_decision_values(two_views):
    """A family scoring with a decision function (SVM) is ranked on the scorer values the search and
    the rescoring computed (accuracy at its own cut), not on its raw scores read as probabilities."""
    y, pa, _, splits = two_views
    fresh = list(folds(5, 1).split(np.zeros((len(y), 1)), y))
    svm = _result(y, np.log(pa / (1 - pa)), splits, proba=False)  # decision values: cut at 0, not 0.5
    svm.best_score, svm.best_index = 0.9, 1
    svm.cv_results = {"mean_test_score": [0.5, 0.9], **{f"split{i}_test_score": [0.5, 0.9] for i in range(5)}}
    svm.rescored_oof, svm.rescored_scores = [svm.oof_proba], [np.full(5, 0.8)]
    other = _result(y, pa, splits)
    other.rescored_oof = [pa]
    champ = choose_champion({"other": other, "svm": svm}, y, [splits, fresh], "accuracy", ensemble=0)
    assert champ.family_scores["svm"] == pytest.approx(0.85)
    assert champ.name == "svm"


def test_auto_calibration_keeps_good_probabilities_and_repairs_bad_ones(two_views):
    """Already calibrated scores keep 'none' or a map no worse; cubed scores get a map that beats them."""
    y, pa, pb, splits = two_views
    p = 1 / (1 + np.exp(-(np.log(pa / (1 - pa)) + np.log(pb / (1 - pb)) + 1)))
    good = calibrate(p, y, splits, (True,))
    assert good.brier[good.method] == min(good.brier.values())
    bad = calibrate(p ** 3, y, splits, (True,))
    assert bad.method in ("sigmoid", "isotonic") and bad.brier[bad.method] < bad.brier["none"] - 0.005
