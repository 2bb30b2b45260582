"""Resuming a search: cached results come back exactly, and nothing untrusted is loaded."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from churn.config import load_job
from churn.data.validate import validate_partition
from churn.modeling.pipeline import build_pipeline, grid_for, inference_pipeline
from churn.modeling.search import search_families
from churn.modeling.search_cache import SearchCache, search_key
from tests.conftest import ROOT, TELCO

pytestmark = pytest.mark.cluster  # the searched fixture runs the search with joblib's loky worker processes

FAMILIES = ["logistic_regression", "mlp"]


@pytest.fixture(scope="module")
def searched():
    """600 Telco rows searched by two small families in this process: (job, X, results)."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(600)
    clean, _ = validate_partition(raw, job.table, "x", np.arange(len(raw)))
    X, y = clean[job.table.features], clean["_label"].astype(int)
    grids = {"logistic_regression": {"C": [0.1, 1.0]}, "mlp": {"hidden_layer_sizes": [(8,)], "alpha": [1e-3]}}
    searches = {f: (build_pipeline(job.table, f, job.model.imbalance, 1), grid_for(f, grids[f], job.model.selection,
                                                                                  job.model.imbalance))
                for f in FAMILIES}
    return job, X, search_families(searches, X, y, cv=2, scoring="roc_auc", seed=1, client=None)


def test_cached_search_comes_back_exactly(tmp_path, searched):
    """cv_results_ (dtypes too), best parameters (tuples stay tuples), scores, out-of-fold
    predictions (the rescored repeats' too) and the fitted pipeline's predictions all equal the search's own."""
    _, X, results = searched
    results = {f: dataclasses.replace(r, rescored_oof=[r.oof_proba[::-1].copy()],
                                      rescored_scores=[np.array([0.7, 0.8])]) for f, r in results.items()}
    cache = SearchCache(tmp_path, "k")
    assert cache.load(FAMILIES) is None
    cache.save(results)
    back = cache.load(FAMILIES)
    for fam in FAMILIES:
        pd.testing.assert_frame_equal(back[fam].cv_results, results[fam].cv_results)
        assert back[fam].best_params == results[fam].best_params
        assert (back[fam].best_score, back[fam].n_fits) == (results[fam].best_score, results[fam].n_fits)
        np.testing.assert_array_equal(back[fam].oof_proba, results[fam].oof_proba)
        np.testing.assert_array_equal(back[fam].rescored_oof[0], results[fam].rescored_oof[0])
        np.testing.assert_array_equal(back[fam].rescored_scores[0], [0.7, 0.8])
        np.testing.assert_array_equal(back[fam].best_estimator.predict_proba(X),
                                      results[fam].best_estimator.predict_proba(X))
    assert isinstance(back["mlp"].best_params["model__hidden_layer_sizes"], tuple)


def test_untrusted_or_damaged_entries_are_not_loaded(tmp_path, searched, caplog):
    """A cached model file naming a type outside the trusted list, or a damaged one, makes the job
    search again (None) without loading it."""
    _, _, results = searched
    cache = SearchCache(tmp_path, "k")
    cache.save(results)
    model = cache.folder / "mlp.model.skops"
    sio.dump(datetime.timedelta(days=1), str(model))
    assert cache.load(FAMILIES) is None
    assert "untrusted types datetime.timedelta" in caplog.text
    model.write_bytes(b"not a skops file")
    assert cache.load(FAMILIES) is None
    assert "cannot read mlp" in caplog.text


def test_the_key_follows_data_spec_and_rows(searched):
    """Another dataset, another row count or another grid is another key; the same inputs, the same key
    (and another search.repeats: the rescoring resumes on the cached search; another model.bagging:
    bagging serves the same search's fold models)."""
    job, _, _ = searched
    key = search_key(job, "dataset-a", 600)
    assert key == search_key(job, "dataset-a", 600)
    more = job.model_copy(update={"search": job.search.model_copy(update={"repeats": 3})})
    assert search_key(more, "dataset-a", 600) == key
    unbagged = job.model_copy(update={"model": job.model.model_copy(update={"bagging": False})})
    assert search_key(unbagged, "dataset-a", 600) == key
    other = job.model_copy(update={"search": job.search.model_copy(update={"cv": 3})})
    assert len({key, search_key(job, "dataset-b", 600), search_key(job, "dataset-a", 601),
                search_key(other, "dataset-a", 600)}) == 4


def test_a_reused_search_restores_the_bagged_members(tmp_path, searched):
    """The served families' fold models, added to a saved entry, load back with the entry and
    predict as before; a family without them loads with none; a later save of the loaded results
    keeps them."""
    _, X, results = searched
    lr = results["logistic_regression"]
    folds = [inference_pipeline(lr.best_estimator), inference_pipeline(results["mlp"].best_estimator)]
    cache = SearchCache(tmp_path, "k")
    cache.save(results)
    cache.save_fold_models({**results, "logistic_regression": dataclasses.replace(lr, fold_models=folds)},
                           ["logistic_regression"])
    back = cache.load(FAMILIES)
    assert back["mlp"].fold_models == []
    assert [type(m).__name__ for m in back["logistic_regression"].fold_models] == ["Pipeline", "Pipeline"]
    for got, want in zip(back["logistic_regression"].fold_models, folds, strict=True):
        np.testing.assert_array_equal(got.predict_proba(X), want.predict_proba(X))
    cache.save(back)
    again = cache.load(FAMILIES)
    np.testing.assert_array_equal(again["logistic_regression"].fold_models[1].predict_proba(X),
                                  folds[1].predict_proba(X))
