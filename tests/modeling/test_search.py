"""The work-sharing search gives scikit-learn's GridSearchCV results, on the cluster."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_predict

from churn.config import EconomicsSpec, SelectionSpec, load_job
from churn.data.generate import generate
from churn.data.validate import validate_partition
from churn.modeling.calibrate import _cross_fit, bagged, choose_champion
from churn.modeling.evaluate import choose_threshold
from churn.modeling.pipeline import build_pipeline, grid_for, inference_pipeline
from churn.modeling.plan import plan
from churn.modeling.search import (
    folds,
    gather_fold_models,
    grid_search,
    refit_fold_models,
    rescore_best,
    search_families,
)
from churn.serving.calibration import ScoreCalibrator, log_odds, member_scores
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """1,200 seeded generated rows as model inputs (X, y)."""
    out = tmp_path_factory.mktemp("search")
    res = generate(out, rows=1_200, files=1, seed=4)
    raw = pd.read_csv(res.files[0], dtype=str, keep_default_na=False)
    job = load_job(ROOT / "jobs" / "train.yaml")
    clean, _ = validate_partition(raw, job.table, "x", np.arange(len(raw)))
    return job.table, clean[job.table.features], clean["_label"].astype(int)


def _reference(pipeline, grid, X, y, cv, seed):
    ref = GridSearchCV(pipeline, grid, cv=folds(cv, seed), scoring="roc_auc", n_jobs=1).fit(X, y)
    return pd.DataFrame(ref.cv_results_), ref.best_params_


@pytest.mark.parametrize("family, imbalance, grid, selection", [
    ("random_forest", "smote",
     {"n_estimators": [5, 10, 20], "min_samples_split": [2, 5, 10], "min_samples_leaf": [1, 4]}, None),
    ("random_forest", "class_weight", {"n_estimators": [8, 16], "max_depth": [4, None]},
     {"correlation_threshold": [None, 0.8], "importance_threshold": [None]}),
    ("logistic_regression", "smote", {"C": [0.1, 1.0]},
     {"correlation_threshold": [None], "importance_threshold": [None, "median"]}),
    ("decision_tree", "none", {"min_samples_split": [2, 6], "min_samples_leaf": [3]}, None),
    ("random_forest", "smote", {"max_depth": [3, None], "min_samples_leaf": [2]}, None),  # no n_estimators
    ("random_forest", "smotenc", {"n_estimators": [6, 12]}, None),
    ("hist_gradient_boosting", "class_weight", {"max_leaf_nodes": [7, 15], "max_iter": [30]}, None),
    ("xgboost", ["none", "class_weight"], {"max_depth": [2, 4], "n_estimators": [30]}, None),
    ("lightgbm", ["none", "class_weight"], {"num_leaves": [3, 7], "n_estimators": [30]}, None),
    ("catboost", ["none", "class_weight"], {"depth": [2, 4], "n_estimators": [30]}, None),
    ("svm", "smote", {"C": [0.3, 1.0]}, None),
    ("mlp", "none", {"alpha": [1e-4, 1e-2], "max_iter": [60]}, None),
])
def test_churn_search_equals_sklearn_grid_search(client, sample, family, imbalance, grid, selection):
    """Every candidate's per-fold scores, the ranks and best_params_ match GridSearchCV(n_jobs=1)."""

    schema, X, y = sample
    pipe = build_pipeline(schema, family, imbalance, seed=3)
    full = grid_for(family, grid, SelectionSpec(**selection) if selection else None, imbalance)
    ours = grid_search(pipe, full, X, y, cv=4, scoring="roc_auc", seed=3, client=client)
    ref, ref_best = _reference(pipe, full, X, y, 4, 3)
    assert ours.best_params == ref_best
    assert [str(p) for p in ours.cv_results["params"]] == [str(p) for p in ref["params"]]
    for s in range(4):
        np.testing.assert_allclose(ours.cv_results[f"split{s}_test_score"], ref[f"split{s}_test_score"],
                                   rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.cv_results["mean_test_score"], ref["mean_test_score"], rtol=0, atol=1e-12)
    assert ours.cv_results["rank_test_score"].tolist() == ref["rank_test_score"].tolist()
    assert ours.oof_proba is not None and not np.isnan(ours.oof_proba).any()
    np.testing.assert_allclose(member_scores(ours.best_estimator, X),  # SVC: its decision function
                               member_scores(GridSearchCV(pipe, full, cv=folds(4, 3), scoring="roc_auc").fit(X, y)
                                             .best_estimator_, X), atol=1e-12)


def test_plan_shares_forests_and_equal_tree_settings(sample):
    """36 seed-grid candidates need 8 forests per fold: sizes share one, min_samples_split folds."""
    schema, _, _ = sample
    pipe = build_pipeline(schema, "random_forest", "smote", seed=0)
    seed_grid = {"n_estimators": [10, 20, 50, 100], "min_samples_split": [2, 5, 10], "min_samples_leaf": [1, 2, 4]}
    search_plan = plan(pipe, grid_for("random_forest", seed_grid))
    assert len(search_plan.candidates) == 36
    assert len(search_plan.groups) == 8
    assert all(g.sizes == [10, 20, 50, 100] for g in search_plan.groups.values())
    assert all(search_plan.apportioned())


def test_halving_strategy_runs_on_the_cluster(client, sample):
    """Successive halving returns a fitted best pipeline and its candidates."""
    schema, X, y = sample
    pipe = build_pipeline(schema, "decision_tree", "smote", seed=1)
    res = grid_search(pipe, grid_for("decision_tree", {"max_depth": [2, 4, 6, 8]}), X, y, cv=3,
                      scoring="roc_auc", seed=1, client=client, strategy="halving")
    assert res.best_params["model__max_depth"] in (2, 4, 6, 8)
    assert res.best_estimator.predict_proba(X.head(5)).shape == (5, 2)


@pytest.mark.parametrize("engine, strategy", [("churn", "grid"), ("sklearn", "grid"), ("churn", "halving"),
                                              ("sklearn", "halving")])
def test_every_engine_gives_out_of_fold_predictions_for_the_threshold(client, sample, engine, strategy):
    """The threshold comes from out-of-fold CV predictions of the best candidate, never the test split."""
    schema, X, y = sample
    pipe = build_pipeline(schema, "logistic_regression", "none", seed=2)
    res = grid_search(pipe, grid_for("logistic_regression", {"C": [0.1, 1.0]}), X, y, cv=3, scoring="roc_auc",
                      seed=2, client=client, engine=engine, strategy=strategy)
    assert res.oof_proba is not None and res.oof_proba.shape == (len(X),)
    ref = cross_val_predict(clone(pipe).set_params(**res.best_params), X, y, cv=folds(3, 2),
                            method="predict_proba")[:, 1]
    np.testing.assert_allclose(res.oof_proba, ref, rtol=0, atol=1e-9)
    threshold = choose_threshold(y.to_numpy(), res.oof_proba, EconomicsSpec())
    assert threshold.source == "out-of-fold CV predictions"
    assert 0 < threshold.value < 1


def test_forest_fit_times_shared_by_sizes_are_labelled_apportioned(client, sample):
    """Candidates scored by a prefix of one shared forest carry fit_time_apportioned=True."""
    schema, X, y = sample
    pipe = build_pipeline(schema, "random_forest", "none", seed=1)
    res = grid_search(pipe, grid_for("random_forest", {"n_estimators": [4, 8], "max_depth": [3]}), X, y, cv=2,
                      scoring="roc_auc", seed=1, client=client)
    assert res.cv_results["fit_time_apportioned"].tolist() == [True, True]
    tree = grid_search(build_pipeline(schema, "decision_tree", "none", seed=1),
                       grid_for("decision_tree", {"max_depth": [2, 3]}), X, y, cv=2, scoring="roc_auc", seed=1,
                       client=client)
    assert tree.cv_results["fit_time_apportioned"].tolist() == [False, False]


def test_families_in_one_graph_equal_families_one_by_one(client, sample):
    """Three families searched in one task graph give each family's own search results (scores,
    best parameters, out-of-fold predictions), and progress counts every fit of each family."""
    schema, X, y = sample
    searches = {
        "logistic_regression": (build_pipeline(schema, "logistic_regression", ["none", "class_weight"], seed=5),
                                grid_for("logistic_regression", {"C": [0.1, 1.0]},
                                         imbalance=["none", "class_weight"])),
        "decision_tree": (build_pipeline(schema, "decision_tree", "none", seed=5),
                          grid_for("decision_tree", {"max_depth": [2, 4, 6]})),
        "random_forest": (build_pipeline(schema, "random_forest", "none", seed=5),
                          grid_for("random_forest", {"n_estimators": [5, 10], "max_depth": [4]})),
    }
    seen: dict[str, list[tuple[int, int]]] = {}
    together = search_families(searches, X, y, cv=3, scoring="roc_auc", seed=5, client=client,
                               progress=lambda fam, done, total: seen.setdefault(fam, []).append((done, total)))
    for fam, (pipe, grid) in searches.items():
        alone = grid_search(pipe, grid, X, y, cv=3, scoring="roc_auc", seed=5, client=client)
        assert together[fam].best_params == alone.best_params, fam
        np.testing.assert_array_equal(together[fam].cv_results["mean_test_score"],
                                      alone.cv_results["mean_test_score"])
        np.testing.assert_array_equal(together[fam].oof_proba, alone.oof_proba)
        total = together[fam].n_fits
        assert seen[fam] == [(i, total) for i in range(total + 1)], fam


def test_rescored_best_candidates_equal_sklearn_out_of_fold_scores(client, sample):
    """Each family's best candidate, scored again on fresh folds (seeds seed+1, seed+2), gives the
    out-of-fold scores of scikit-learn's cross_val_predict on those folds."""
    schema, X, y = sample
    searches = {fam: (build_pipeline(schema, fam, "none", seed=3), grid_for(fam, grid))
                for fam, grid in [("logistic_regression", {"C": [0.1, 1.0]}), ("svm", {"C": [1.0]})]}
    results = search_families(searches, X, y, cv=3, scoring="roc_auc", seed=3, client=client)
    assert rescore_best(results, X, y, cv=3, seed=3, repeats=3, scoring="roc_auc", client=client) == 2
    assert rescore_best(results, X, y, cv=3, seed=3, repeats=3, scoring="roc_auc", client=client) == 0  # had both
    for fam, (pipe, _) in searches.items():
        assert len(results[fam].rescored_oof) == len(results[fam].rescored_scores) == 2
        for r, oof in enumerate(results[fam].rescored_oof, start=1):
            method = "predict_proba" if fam != "svm" else "decision_function"
            ref = cross_val_predict(clone(pipe).set_params(**results[fam].best_params), X, y, cv=folds(3, 3 + r),
                                    method=method)
            np.testing.assert_allclose(oof, ref[:, 1] if ref.ndim == 2 else ref, rtol=1e-6, atol=1e-9)


def test_kept_fold_models_are_served_and_the_maps_learn_on_their_own_scores(client, sample):
    """With keep_models, the first fresh repeat's fold models equal scikit-learn's fits on those
    folds, and their bag predicts the mean of those fits' log-odds; the rescored out-of-fold scores
    are exactly the served fold models' scores of their test rows; the stack weights (the
    calibrator) and the calibrated out-of-fold probabilities the threshold is chosen on are fitted
    on those scores, not on the search's folds."""
    schema, X, y = sample
    searches = {fam: (build_pipeline(schema, fam, "none", seed=3), grid_for(fam, grid))
                for fam, grid in [("logistic_regression", {"C": [0.1, 1.0]}), ("svm", {"C": [1.0]})]}
    results = search_families(searches, X, y, cv=3, scoring="roc_auc", seed=3, client=client)
    assert rescore_best(results, X, y, cv=3, seed=3, repeats=2, scoring="roc_auc", client=client,
                        keep_models=True) == 1
    gather_fold_models(results, list(results), client)
    splits = list(folds(3, 4).split(X, y))  # the first fresh repeat: seed + 1
    served = {}
    for fam, (pipe, _) in searches.items():
        models = results[fam].fold_models
        assert len(models) == 3 and all(not hasattr(m, "fit_resample") for m in models)
        ref = [inference_pipeline(clone(pipe).set_params(**results[fam].best_params).fit(X.iloc[tr], y.iloc[tr]))
               for tr, _ in splits]
        bag, by_hand = bagged(models), np.mean([member_scores(m, X) if fam == "svm" else
                                                log_odds(member_scores(m, X)) for m in ref], axis=0)
        np.testing.assert_allclose(bag.decision_function(X) if fam == "svm" else bag.mean_log_odds(X), by_hand,
                                   rtol=1e-7, atol=1e-9)
        own = np.full(len(y), np.nan)
        for model, (_, test) in zip(models, splits, strict=True):
            own[test] = member_scores(model, X.iloc[test])
        np.testing.assert_array_equal(results[fam].rescored_oof[0], own)
        served[fam] = own
    repeats = [list(folds(3, 3 + r).split(X, y)) for r in range(2)]
    champ = choose_champion(results, y.to_numpy(), repeats, "roc_auc", ensemble=2, calibration="sigmoid")
    assert champ.calibrated_on == 1 and champ.calibration.method == "sigmoid"
    S = np.column_stack([served[f] for f in champ.members])
    is_proba = tuple(f != "svm" for f in champ.members)
    method = champ.calibration.method
    refit = ScoreCalibrator(method, is_proba).fit(S, y.to_numpy())
    np.testing.assert_array_equal(champ.calibration.calibrator.predict(S), refit.predict(S))
    np.testing.assert_array_equal(champ.oof_proba, _cross_fit(method, S, y.to_numpy(), repeats[1], is_proba))
    search_folds = ScoreCalibrator(method, is_proba).fit(
        np.column_stack([results[f].oof_proba for f in champ.members]), y.to_numpy())
    assert not np.allclose(champ.calibration.calibrator.predict(S), search_folds.predict(S))
    # a reused search whose cache kept no fold models fits them again: the same models, the same scores
    kept, results["logistic_regression"].fold_models = results["logistic_regression"].fold_models, []
    refit_fold_models(results, ["logistic_regression"], X, y, cv=3, seed=3, scoring="roc_auc", client=client)
    gather_fold_models(results, ["logistic_regression"], client)
    np.testing.assert_array_equal(results["logistic_regression"].rescored_oof[0], served["logistic_regression"])
    for again, model in zip(results["logistic_regression"].fold_models, kept, strict=True):
        np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    assert results["svm"].fold_models == []  # not asked for: dropped, and freed on the workers
