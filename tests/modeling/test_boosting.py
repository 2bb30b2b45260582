"""XGBoostClassifier: scikit-learn's contract, early stopping on its own rows, and a save without pickle."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn.base import clone

from churn.config import load_job
from churn.modeling.boosting import XGBoostClassifier
from churn.modeling.features import CategoryEncoder
from churn.modeling.preflight import check_grids
from churn.serving.calibration import ChurnClassifier, ScoreCalibrator
from churn.serving.trusted import TRUSTED_TYPES, dump_pipeline, load_pipeline, saved_types
from churn.tracking.registry import requirements
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    """1,200 seeded rows: two numbers (one with blanks), a text column, and a label that depends on all three."""
    rng = np.random.default_rng(7)
    n = 1_200
    X = pd.DataFrame({"a": rng.normal(size=n), "b": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
                      "plan": rng.choice(["basic", "plus", "max", "rare"], size=n, p=[0.5, 0.3, 0.18, 0.02])})
    logit = X["a"] + 1.5 * (X["plan"] == "plus") - 1.0 * (X["plan"] == "max") + np.nan_to_num(X["b"]) * 0.5
    y = (logit + rng.logistic(size=n) > 1.0).astype(int).to_numpy()
    return CategoryEncoder(categorical=["plan"]).fit_transform(X), y


def test_fits_on_categories_and_predicts_probabilities(frame):
    """Native categories in, [1 - p, p] out; the fitted attributes scikit-learn expects; same seed, same model."""
    X, y = frame
    model = XGBoostClassifier(random_state=0).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert model.booster_.feature_types == ["float", "float", "c"]
    assert model.feature_names_in_.tolist() == ["a", "b", "plan"] and model.n_features_in_ == 3
    assert model.classes_.tolist() == [0, 1]
    assert model.booster_.num_boosted_rounds() == model.best_iteration_ + 1
    assert ((model.predict(X) == 1) == (proba[:, 1] > 0.5)).all()
    np.testing.assert_array_equal(clone(model).fit(X, y).predict_proba(X), proba)  # deterministic
    with pytest.raises(ValueError, match="two classes"):
        XGBoostClassifier().fit(X, np.zeros(len(X)))


def test_early_stopping_holds_out_part_of_the_training_rows(frame):
    """On a label of pure noise the held-out share of the training rows stops boosting long before
    n_estimators; without early stopping every round is kept."""
    X, _ = frame
    noise = np.random.default_rng(1).integers(0, 2, len(X))
    stopped = XGBoostClassifier(n_estimators=300, early_stopping_rounds=10, random_state=0).fit(X, noise)
    assert stopped.best_iteration_ < 50
    assert stopped.booster_.num_boosted_rounds() == stopped.best_iteration_ + 1
    full = XGBoostClassifier(n_estimators=40, early_stopping_rounds=None, random_state=0).fit(X, noise)
    assert full.best_iteration_ == 39 and full.booster_.num_boosted_rounds() == 40
    # a different seed holds out different rows: a different model
    other = XGBoostClassifier(n_estimators=300, early_stopping_rounds=10, random_state=1).fit(X, noise)
    assert not np.array_equal(other.predict_proba(X), stopped.predict_proba(X))


def test_balanced_class_weight_is_scale_pos_weight(frame):
    """class_weight="balanced" trains with scale_pos_weight = negatives / positives (as the booster saved it)."""
    X, y = frame
    model = XGBoostClassifier(class_weight="balanced", n_estimators=20, random_state=0).fit(X, y)
    expected = (y == 0).sum() / (y == 1).sum()
    assert model.scale_pos_weight_ == pytest.approx(expected)
    config = json.loads(model.booster_.save_config())["learner"]["objective"]["reg_loss_param"]
    assert float(config["scale_pos_weight"]) == pytest.approx(expected, rel=1e-6)
    plain = XGBoostClassifier(n_estimators=20, random_state=0).fit(X, y)
    assert plain.scale_pos_weight_ == 1.0
    assert model.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean() + 0.05  # weighted up


def test_from_booster_predicts_what_the_booster_predicts(frame):
    """A booster trained by xgboost.train on the encoded columns (as the full-data fit trains one),
    wrapped, predicts its probabilities up to its best round; other objectives are refused."""
    X, y = frame
    train = xgboost.DMatrix(X.iloc[:1000], y[:1000], enable_categorical=True)
    held = xgboost.DMatrix(X.iloc[1000:], y[1000:], enable_categorical=True)
    params = XGBoostClassifier(max_depth=3).booster_params()
    booster = xgboost.train(params, train, num_boost_round=200, evals=[(held, "v")], early_stopping_rounds=5,
                            verbose_eval=False)
    model = XGBoostClassifier.from_booster(booster, max_depth=3)
    assert model.best_iteration_ == booster.best_iteration and model.get_params()["max_depth"] == 3
    expected = booster.predict(xgboost.DMatrix(X, enable_categorical=True),
                               iteration_range=(0, booster.best_iteration + 1))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], expected, rtol=0, atol=1e-7)
    assert model.feature_names_in_.tolist() == ["a", "b", "plan"] and model.classes_.tolist() == [0, 1]
    assert XGBoostClassifier.from_booster(booster, best_iteration=2).booster_.num_boosted_rounds() == 3
    squared = xgboost.train({"objective": "reg:squarederror"}, train, num_boost_round=2)
    with pytest.raises(ValueError, match="binary:logistic"):
        XGBoostClassifier.from_booster(squared)


def test_saved_with_skops_as_ubj_bytes_and_loaded_back(tmp_path, frame):
    """The registered form of a model holding an XGBoostClassifier saves with skops, names no XGBoost
    type (the booster is UBJSON bytes, nothing pickled), loads back with the trusted list and predicts
    the same; its serving requirements add XGBoost's distribution, and only for such a model."""
    X, y = frame
    model = XGBoostClassifier(n_estimators=50, random_state=0).fit(X, y)
    calibrator = ScoreCalibrator("sigmoid", (True,)).fit(model.predict_proba(X)[:, 1], y)
    registered = ChurnClassifier(members=[model], calibrator=calibrator, names=["xgboost"])
    path = str(tmp_path / "model.skops")
    dump_pipeline(registered, path)
    types = saved_types(path)
    assert "churn.modeling.boosting.XGBoostClassifier" in types and set(types) <= set(TRUSTED_TYPES)
    assert not [t for t in types if "xgboost" in t.split(".")[0]]
    with zipfile.ZipFile(path) as zf:
        assert b"pickle" not in zf.read("schema.json").lower()
    back = load_pipeline(path)
    np.testing.assert_array_equal(back.predict_proba(X), registered.predict_proba(X))
    assert back.members[0].booster_.num_boosted_rounds() == model.best_iteration_ + 1
    needs = requirements(types)
    assert f"xgboost-cpu=={xgboost.__version__}" in needs or f"xgboost=={xgboost.__version__}" in needs
    assert requirements() == [r for r in needs if not r.startswith("xgboost")]
    # pickle (how dask moves a fitted model between processes) goes through the same UBJSON state
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict_proba(X), model.predict_proba(X))


def test_preflight_checks_an_xgboost_grid():
    """A grid value XGBoostClassifier's constraints refuse is named before any cluster starts."""
    job = load_job(ROOT / "jobs" / "train.yaml",
                   ["model.families=[xgboost]", "model.grids={xgboost: {max_depth: [0]}}"])
    with pytest.raises(Exception, match=r"model.grids.xgboost: grid point \(max_depth=0.*XGBoostClassifier"):
        check_grids(job)
    check_grids(load_job(ROOT / "jobs" / "train.yaml", ["model.families=[xgboost]"]))  # the default grid passes
