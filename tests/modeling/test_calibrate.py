"""Choosing the champion among families and their stack, and its calibration, from OOF scores."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from churn.modeling.calibrate import (
    BAGGING_EXTRA_SECONDS,
    STACK,
    bagging_choice,
    calibrate,
    choose_champion,
    fold_scores,
)
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


def _levels(positives: dict[float, list[int]], per_level: int) -> tuple[np.ndarray, np.ndarray, list]:
    """Scores at a few levels, and labels with ``positives[level][f]`` churners out of ``per_level``
    rows of that level in fold ``f``; the folds as CV splits."""
    s, y, fold = [], [], []
    for f in range(len(next(iter(positives.values())))):
        for level, counts in positives.items():
            s += [level] * per_level
            y += [1] * counts[f] + [0] * (per_level - counts[f])
            fold += [f] * per_level
    fold_of = np.array(fold)
    splits = [(np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)) for f in range(fold_of.max() + 1)]
    return np.array(s), np.array(y), splits


def test_auto_calibration_keeps_scores_that_are_already_calibrated():
    """Scores 0.2 / 0.5 / 0.8 whose rows churn at those rates over the 5 folds; 0.2 and 0.8 in every
    fold, 0.5 at 4, 6, 5, 5, 5 churners of 10 per fold. A map sends a level to one value learnt on
    the other folds: the right one (the score) for 0.2, 0.8 and the balanced folds, and for the
    0.4 (0.6) fold a value above (below) 0.5, on the far side of the score from the fold's own
    rate. So every map's cross-fitted Brier is above 'none''s: none."""
    s, y, splits = _levels({0.2: [2] * 5, 0.5: [4, 6, 5, 5, 5], 0.8: [8] * 5}, per_level=10)
    cal = calibrate(s, y, splits, (True,))
    assert cal.method == "none"
    # none, by hand: levels 0.2 and 0.8: 0.2 * 0.8 = 0.16; level 0.5: 0.25 in every fold; (0.16 + 0.25 + 0.16) / 3
    assert cal.brier["none"] == pytest.approx(0.19, abs=1e-12)
    # isotonic learns 21/40 = 0.525 for the 0.4 fold, 19/40 = 0.475 for the 0.6 fold: each of those 20 rows
    # costs 0.125^2 - 0.1^2 = 0.005625 more than 'none': 0.19 + 20 * 0.005625 / 150 = 0.19075
    assert cal.brier["isotonic"] == pytest.approx(0.19075, abs=1e-12)
    assert cal.brier["sigmoid"] > 0.19


def test_auto_calibration_picks_isotonic_for_a_monotone_non_sigmoid_distortion():
    """Scores 0.2 / 0.4 / 0.6 / 0.8 whose rows churn at 5 / 10 / 15 / 90 % in every fold: monotone, so
    the isotonic map learns the four rates exactly (the best any map can do), but their logits
    (-2.94, -2.20, -1.73, 2.20) are not a line in the scores' logits (-1.39, -0.41, 0.41, 1.39), so no
    sigmoid reaches them, and the scores themselves are far off: isotonic."""
    s, y, splits = _levels({0.2: [1] * 5, 0.4: [2] * 5, 0.6: [3] * 5, 0.8: [18] * 5}, per_level=20)
    cal = calibrate(s, y, splits, (True,))
    assert cal.method == "isotonic"
    # isotonic, by hand: mean of r * (1 - r) = (0.0475 + 0.09 + 0.1275 + 0.09) / 4 = 0.08875
    assert cal.brier["isotonic"] == pytest.approx(0.08875, abs=1e-12)
    # none: mean of r * (1 - s)^2 + (1 - r) * s^2 = (0.07 + 0.18 + 0.33 + 0.10) / 4 = 0.17
    assert cal.brier["none"] == pytest.approx(0.17, abs=1e-12)
    np.testing.assert_allclose(cal.calibrator.predict(np.array([0.2, 0.4, 0.6, 0.8])), [0.05, 0.1, 0.15, 0.9],
                               atol=1e-12)


def test_auto_bags_when_two_honest_fold_models_averaged_do_not_score_worse_and_the_time_fits(two_views):
    """Two out-of-fold scores of each row from independently noisy models average to a better
    one: auto bags; two copies of one model (no variance to average out) tie: bagged too, ties
    cost nothing in CV; a member whose k x scoring would add more than the allowed seconds, or
    whose averaged scores are worse, is refitted; true and false decide without the check, and
    without fold models nothing is bagged."""
    y, pa, _, splits = two_views
    fresh = list(folds(5, 1).split(np.zeros((len(y), 1)), y))
    rng = np.random.default_rng(8)

    def noisy():
        return np.clip(pa + rng.normal(scale=0.15, size=len(y)), 1e-3, 1 - 1e-3)

    def family(first, second, seconds=1e-6):
        return SimpleNamespace(oof_proba=first, rescored_oof=[second], fold_models=[object()] * 5,
                               predict_seconds=seconds, proba_scores=True)

    unstable = {"f": family(noisy(), noisy())}
    choice = bagging_choice(unstable, ["f"], y, [splits, fresh], "roc_auc", "auto", rows_scored=80_000, workers=2)
    assert choice.bagged and choice.gain > 0.005 and choice.extra_seconds == pytest.approx(4 * 1e-6 * 40_000)
    assert bagging_choice({"f": family(pa, pa)}, ["f"], y, [splits, fresh], "roc_auc").gain == pytest.approx(0)
    slow = {"f": family(noisy(), noisy(), seconds=1e-3)}
    costly = bagging_choice(slow, ["f"], y, [splits, fresh], "roc_auc", "auto", rows_scored=80_000, workers=2)
    assert not costly.bagged and costly.extra_seconds > BAGGING_EXTRA_SECONDS and "more than" in costly.reason
    assert bagging_choice(slow, ["f"], y, [splits, fresh], "roc_auc", True, rows_scored=80_000).bagged
    worse = {"f": family(pa, 1 - pa)}  # the second model ranks backwards: averaging destroys the first
    assert not bagging_choice(worse, ["f"], y, [splits, fresh], "roc_auc").bagged
    assert not bagging_choice(unstable, ["f"], y, [splits, fresh], "roc_auc", False).bagged
    unstable["f"].fold_models = []
    assert not bagging_choice(unstable, ["f"], y, [splits, fresh], "roc_auc", True).bagged
