"""After the search: the stacked candidate, the calibration map and the registered classifier.

Everything here works on the out-of-fold (OOF) scores the search already computed, on the same
CV folds, so no row's own label ever shapes the probability it is given:

* :func:`stack_scores` — a logistic regression over the best families' OOF scores, cross-fitted
  fold by fold: the stacked ensemble's CV score, comparable with each family's;
* :func:`calibrate` — the calibration map (sigmoid or isotonic, or the one with the lower
  cross-fitted Brier score) and the cross-fitted calibrated OOF probabilities that the
  decision threshold is chosen on;
* :func:`bagging_choice` — whether the served members are the fold models of the first fresh
  CV repeat, averaged (``model.bagging``).

The stack weights, the calibration map and the threshold are fitted on the first *fresh*
repeat's OOF scores (``rescored_oof[0]``), not on the search's folds, whose scores chose the grid
winner; with bagging those are exactly the served fold models' own OOF scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import brier_score_loss, check_scoring

from churn.modeling.search import FixedScores
from churn.serving.calibration import ChurnClassifier, FoldAverage, ScoreCalibrator, log_odds

log = logging.getLogger(__name__)

STACK = "stacked_ensemble"


@dataclass
class Calibration:
    """The chosen map, fitted on every OOF row, and what it was chosen on."""

    method: str
    calibrator: ScoreCalibrator
    oof_proba: np.ndarray = field(repr=False)  # cross-fitted: each fold's rows mapped by the other folds' fit
    brier: dict[str, float] = field(default_factory=dict)  # cross-fitted OOF Brier score per method tried


def _cross_fit(method: str, S: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
               is_proba: tuple[bool, ...]) -> np.ndarray:
    out = np.full(len(y), np.nan)
    for train, test in splits:
        out[test] = ScoreCalibrator(method, is_proba).fit(S[train], y[train]).predict(S[test])
    return out


def fold_scores(y: np.ndarray, p: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]], scoring: str
                ) -> np.ndarray:
    """``scoring`` on each fold's test rows of an OOF prediction vector."""
    scorer = check_scoring(FixedScores(np.array([0, 1])), scoring=scoring)
    out = []
    for _, test in splits:
        proba = np.column_stack([1 - p[test], p[test]])
        out.append(float(scorer(FixedScores(np.array([0, 1]), proba), np.zeros((len(test), 1)), y[test])))
    return np.array(out)


def stack_scores(S: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
                 is_proba: tuple[bool, ...]) -> np.ndarray:
    """Cross-fitted probabilities of the stacked ensemble over the member OOF score columns ``S``."""
    return _cross_fit("sigmoid", S, y, splits, is_proba)


def calibrate(S: np.ndarray, y: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]],
              is_proba: tuple[bool, ...], method: str = "auto") -> Calibration:
    """Fit the calibration map of the champion's OOF score columns ``S``.

    ``auto`` tries sigmoid and isotonic (and ``none`` when the single column is already a
    probability) and keeps the lowest cross-fitted Brier score; several columns (a stack)
    always use sigmoid, which is the stack's own combiner.
    """
    S = np.asarray(S, dtype=np.float64).reshape(len(y), -1)
    y = np.asarray(y).astype(int)
    if S.shape[1] > 1:
        tried = ["sigmoid"]
    elif method == "auto":
        tried = (["none"] if is_proba[0] else []) + ["sigmoid", "isotonic"]
    else:
        tried = [method]
    oof = {m: _cross_fit(m, S, y, splits, is_proba) for m in tried}
    brier = {m: float(brier_score_loss(y, p)) for m, p in oof.items()}
    chosen = min(tried, key=lambda m: brier[m])  # first listed wins ties: none before a map
    return Calibration(chosen, ScoreCalibrator(chosen, is_proba).fit(S, y), oof[chosen], brier)


def assemble(members: list[Any], calibration: Calibration, names: list[str]) -> ChurnClassifier:
    """The registered classifier: fitted inference pipelines (or :class:`FoldAverage` members)
    and the calibration map over them."""
    return ChurnClassifier(members=members, calibrator=calibration.calibrator, names=names)


def bagged(fold_models: list[Any]) -> FoldAverage:
    """A family's served member under bagging: its fold models, averaged in log-odds."""
    return FoldAverage(members=list(fold_models))


@dataclass
class Champion:
    """The winning candidate: one family's best pipeline, or the stack of the best few."""

    name: str  # a family name, or STACK
    members: list[str]  # families whose best pipelines it uses
    cv_score: float
    cv_std: float
    calibration: Calibration
    stack_score: float | None = None  # the stack's CV score, also when it did not win
    stack_std: float | None = None
    family_scores: dict[str, float] = field(default_factory=dict)  # each family's CV score over the repeats
    repeats: int = 1  # CV repeats the choice was made on (the search's folds, then fresh ones)
    calibrated_on: int = 0  # the repeat whose OOF scores fit the stack weights, calibration and threshold

    @property
    def oof_proba(self) -> np.ndarray:
        """Calibrated, cross-fitted out-of-fold probabilities (for the threshold)."""
        return self.calibration.oof_proba


MIN_GAIN = 0.0005  # a family joins the stack only if the stack's CV score rises by this much


def clear_gain(trial: np.ndarray, current: np.ndarray, repeats: int = 1) -> bool:
    """Do per-fold scores ``trial`` beat ``current`` (a stack with one more member, a pipeline with
    one more feature step)? The mean gain over the same folds must reach :data:`MIN_GAIN` and one
    standard error of the fold-wise gains (a gain that the folds disagree on is noise; it would
    put a part in the served model for nothing). Folds of ``repeats`` CV repeats hold the same rows,
    so they count as the folds of one repeat (the conservative standard error)."""
    gain = trial - current
    n = len(gain) / repeats
    se = float(gain.std(ddof=1) / np.sqrt(n)) if len(gain) > 1 else 0.0
    return float(gain.mean()) >= max(MIN_GAIN, se)


Splits = list[tuple[np.ndarray, np.ndarray]]


def _oof_by_repeat(result: Any) -> list[np.ndarray]:
    """A family's out-of-fold scores: on the search's folds, then on each further repeat."""
    return [result.oof_proba, *getattr(result, "rescored_oof", [])]


def _stack_cv(results: dict[str, Any], members: list[str], y: np.ndarray, repeats: list[Splits],
              scoring: str) -> np.ndarray:
    """Per-fold scores of the stack of ``members``, cross-fitted within each repeat's folds, over
    every repeat one after another."""
    out = []
    for r, splits in enumerate(repeats):
        S = np.column_stack([_oof_by_repeat(results[f])[r] for f in members])
        p = stack_scores(S, y, splits, tuple(results[f].proba_scores for f in members))
        out.append(fold_scores(y, p, splits, scoring))
    return np.concatenate(out)


def _scorer_folds(result: Any, r: int, k: int) -> np.ndarray | None:
    """The scorer's own per-fold values of a family's best candidate on repeat ``r`` (the search's
    ``cv_results`` row of it, or the rescoring's), where they were kept: a decision function
    (SVM) read as a probability would be cut at 0.5 by a scorer that predicts classes."""
    if r > 0:
        kept = getattr(result, "rescored_scores", [])
        return np.asarray(kept[r - 1], float) if len(kept) >= r else None
    cv, at = getattr(result, "cv_results", None), getattr(result, "best_index", None)
    columns = [f"split{i}_test_score" for i in range(k)]
    if cv is None or at is None or not all(c in cv for c in columns):
        return None
    return np.array([cv[c][at] for c in columns], float)


def _family_cv(result: Any, y: np.ndarray, repeats: list[Splits], scoring: str) -> np.ndarray:
    """Per-fold scores of one family's best candidate over every repeat, one after another."""
    out = []
    for r, splits in enumerate(repeats):
        kept = _scorer_folds(result, r, len(splits))
        out.append(kept if kept is not None else fold_scores(y, _oof_by_repeat(result)[r], splits, scoring))
    return np.concatenate(out)


def choose_champion(results: dict[str, Any], y: np.ndarray, repeats: list[Splits], scoring: str, ensemble: int,
                    calibration: str = "auto") -> Champion:
    """The best family by CV score, or a stack of up to ``ensemble`` families when its
    cross-fitted CV score is higher; then its calibration map.

    ``repeats`` are the CV splits: the search's folds first, then the fresh folds each family's
    best candidate was scored on again (``rescored_oof``, see
    :func:`churn.modeling.search.rescore_best`). Families are ranked, and the stack is judged, on
    the fold scores of every repeat that all the usable families have; the search's folds alone
    would favour the family whose grid best suited them. The stack weights and the calibration
    map are fitted on the first fresh repeat's OOF scores (the scores of the fold models that
    bagging serves), on the search's folds only when no fresh repeat was made.

    The stack is built by forward selection (as in Caruana et al.'s ensemble selection): start
    from the best family, add the family that raises the stack's CV score most, stop when none
    raises it by ``MIN_GAIN`` and by one standard error of its fold-wise gains (:func:`clear_gain`),
    or the stack is full. Weak or redundant families stay out, which keeps the served model
    small. ``results`` maps family → search result (``best_score``, ``std_score``,
    ``oof_proba``, ``proba_scores``, ``rescored_oof``); families that tie keep the first listed.
    """
    y = np.asarray(y).astype(int)
    usable = [f for f in results if results[f].oof_proba is not None]
    available = min((len(_oof_by_repeat(results[f])) for f in usable), default=1)
    if available < len(repeats):
        log.warning("the champion is chosen on %d CV repeat(s), not %d: not every family was rescored",
                    available, len(repeats))
        repeats = repeats[:available]
    single = {f: _family_cv(results[f], y, repeats, scoring) for f in usable}
    scored = {f: (float(single[f].mean()), float(single[f].std())) if f in single
              else (results[f].best_score, results[f].std_score) for f in results}
    ranked = sorted(results, key=lambda f: -scored[f][0])  # stable: first listed wins ties
    usable.sort(key=ranked.index)
    best = ranked[0]
    name, members, (score, std) = best, [best], scored[best]
    stack_score = stack_std = None
    if ensemble >= 2 and len(usable) >= 2 and best in usable:
        def stack_cv(members: list[str]) -> np.ndarray:
            return _stack_cv(results, members, y, repeats, scoring)

        chosen, current = [best], stack_cv([best])  # per fold, like the trials
        while len(chosen) < ensemble:
            trials = {f: stack_cv([*chosen, f]) for f in usable if f not in chosen}
            if not trials:
                break
            pick = max(trials, key=lambda f: trials[f].mean())
            if len(chosen) == 1:  # no stack yet: report the best pair tried, even if it does not win
                stack_score, stack_std = float(trials[pick].mean()), float(trials[pick].std())
            if not clear_gain(trials[pick], current, len(repeats)):
                break
            chosen.append(pick)
            current = trials[pick]
            stack_score, stack_std = float(current.mean()), float(current.std())
        if len(chosen) > 1:
            name, members, score, std = STACK, chosen, stack_score, stack_std
    at = 1 if len(repeats) > 1 else 0
    S = np.column_stack([_oof_by_repeat(results[f])[at] for f in members])
    cal = calibrate(S, y, repeats[at], tuple(results[f].proba_scores for f in members),
                    "sigmoid" if len(members) > 1 else calibration)
    return Champion(name, members, float(score), float(std), cal, stack_score, stack_std,
                    {f: v[0] for f, v in scored.items()}, len(repeats), at)


@dataclass
class BaggingChoice:
    """Whether the champion's members are served bagged, and why."""

    bagged: bool
    reason: str
    gain: float | None = None  # mean CV gain of averaging two fold models over one (see bagging_choice)
    extra_seconds: float | None = None  # estimated scoring time bagging adds to the job (see bagging_choice)


# auto bags only while the scoring time bagging adds to the job's evaluation stays within this: the
# default job on Telco (7 families, 2 workers) takes about 55 s of its 60 s budget without bagging. Measured
# (CPU seconds, one thread): permutation importance of a logistic regression + xgboost stack on 1,000 Telco
# rows, 3.4 s with single members, 15.0 s with 5-fold bagged ones (+5.8 s on 2 workers; the estimate
# below gives +4.9 s); bagging also skips the finalize refit, which gives some of it back
BAGGING_EXTRA_SECONDS = 5.0


def _pair_gain(a: np.ndarray, b: np.ndarray, is_proba: bool, y: np.ndarray, splits: Splits,
               scoring: str) -> float:
    """CV gain of averaging two models' out-of-fold scores ``a`` and ``b`` (log-odds, as
    :class:`FoldAverage` averages) over the mean of their own scores, each put on the probability
    scale by a sigmoid map cross-fitted over ``splits`` (as served: ranking scorers see no
    difference, Brier and log loss compare calibrated scores)."""
    la, lb = (log_odds(a), log_odds(b)) if is_proba else (a, b)
    score = {k: fold_scores(y, _cross_fit("sigmoid", v, y, splits, (False,)), splits, scoring).mean()
             for k, v in (("a", la), ("b", lb), ("mean", (la + lb) / 2))}
    return float(score["mean"] - (score["a"] + score["b"]) / 2)


def bagging_choice(results: dict[str, Any], members: list[str], y: np.ndarray, repeats: list[Splits], scoring: str,
                   mode: str | bool = "auto", rows_scored: int = 0, workers: int = 1) -> BaggingChoice:
    """Serve ``members`` as the mean of their fold models (``model.bagging``)?

    ``true``/``false`` decide; bagging needs every member's fold models of the first fresh repeat.
    ``auto`` decides by cross-validation. A bagged model has no out-of-fold score of its own (every
    fold model but one saw each row), nor has a model refitted on every row; but two fitted models
    that both never saw a row do exist: a family's best candidate on the search's folds and on the
    first fresh repeat (on the first two fresh repeats when ``search.repeats`` is 3 or more). Each
    row's two out-of-fold scores, averaged, are an honest two-model bag. ``auto`` bags when, over the
    members, that average scores on the fresh repeat's folds at least the mean of the two models'
    own scores: averaging does not hurt (it reduces the variance of unstable learners, and k
    models reduce it further than two), **and** the time it adds stays within
    :data:`BAGGING_EXTRA_SECONDS`. The fits are the rescoring's, already made, and no refit follows;
    the cost is k predictions per member wherever the model scores: ``rows_scored`` rows in the
    job's evaluation (the test split, and the permutation importance's shuffled copies of its
    sample), spread over ``workers``, at each member's CPU seconds per row measured when its fold
    models scored their test rows (``predict_seconds``). A stack of slow scorers (an SVC, a forest)
    can cost more than the CV gain is worth; one linear or boosted model costs a few seconds.
    """
    if mode is False:
        return BaggingChoice(False, "model.bagging is false")
    missing = [f for f in members if not results[f].fold_models or not getattr(results[f], "rescored_oof", [])]
    if missing or len(repeats) < 2:
        return BaggingChoice(False, f"no fold models of {', '.join(missing or members)} (bagging needs a fresh "
                                    "CV repeat: search.repeats 2 or more)")
    y = np.asarray(y).astype(int)
    gains = []
    for f in members:
        oof = _oof_by_repeat(results[f])
        first, second = (1, 2) if len(oof) > 2 and len(repeats) > 2 else (0, 1)
        gains.append(_pair_gain(oof[first], oof[second], results[f].proba_scores, y, repeats[1], scoring))
    gain = float(np.mean(gains))
    per_row = sum(float(getattr(results[f], "predict_seconds", float("nan"))) for f in members)
    k = len(results[members[0]].fold_models)
    extra = (k - 1) * per_row * rows_scored / max(workers, 1)  # nan when a cost was not measured (old cache)
    said = (f"two fold models averaged score {gain:+.4f} {scoring} against one by CV; {k}x scoring adds "
            f"about {extra:.1f} s to the evaluation")
    if mode is True:
        return BaggingChoice(True, f"model.bagging is true; {said}", gain, extra)
    if gain < 0:
        return BaggingChoice(False, f"auto: {said} (worse by CV)", gain, extra)
    if extra > BAGGING_EXTRA_SECONDS:
        return BaggingChoice(False, f"auto: {said} (more than {BAGGING_EXTRA_SECONDS:.0f} s)", gain, extra)
    return BaggingChoice(True, f"auto: {said} (not worse by CV, within {BAGGING_EXTRA_SECONDS:.0f} s)", gain, extra)
