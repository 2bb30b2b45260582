"""LightGBMClassifier and CatBoostClassifier: scikit-learn's contract, native categories, early stopping
on their own rows, balanced weights, and a save without pickle in each library's own format."""

from __future__ import annotations

import json
import pickle
import zipfile

import catboost
import lightgbm
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from churn.config import load_job
from churn.config.families import DEFAULT_FAMILIES, FAMILY_NAMES
from churn.data.validate import validate_partition
from churn.modeling.catboost_family import CatBoostClassifier
from churn.modeling.features import CategoryEncoder
from churn.modeling.lgbm import LightGBMClassifier
from churn.modeling.pipeline import build_pipeline
from churn.modeling.preflight import check_grids
from churn.serving.calibration import ChurnClassifier, ScoreCalibrator
from churn.serving.trusted import TRUSTED_TYPES, dump_pipeline, load_pipeline, saved_types
from churn.tracking.registry import requirements
from tests.conftest import ROOT

CLASSES = {"lightgbm": LightGBMClassifier, "catboost": CatBoostClassifier}
LIBRARY = {"lightgbm": lightgbm, "catboost": catboost}
FAST = {"lightgbm": {}, "catboost": {"depth": 4}}  # CatBoost's default depth 6 costs more per round


def _node(schema: dict, key: str) -> dict:
    """The node saved under ``key`` anywhere in a skops schema."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if key in node:
                return node[key]
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    raise KeyError(key)


@pytest.fixture(scope="module")
def frame() -> tuple[pd.DataFrame, np.ndarray]:
    """1,200 seeded rows: two numbers (one with blanks), a text column with a blank level, and a label
    that depends on all three; encoded as the pipelines encode (``plan`` a pandas category)."""
    rng = np.random.default_rng(7)
    n = 1_200
    plan = rng.choice(["basic", "plus", "max", "rare"], size=n, p=[0.5, 0.3, 0.18, 0.02]).astype(object)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
                      "plan": np.where(rng.random(n) < 0.05, None, plan)})
    logit = X["a"] + 1.5 * (X["plan"] == "plus") - 1.0 * (X["plan"] == "max") + np.nan_to_num(X["b"]) * 0.5
    y = (logit + rng.logistic(size=n) > 1.0).astype(int).to_numpy()
    return CategoryEncoder(categorical=["plan"]).fit_transform(X), y


@pytest.mark.parametrize("family", list(CLASSES))
def test_fits_on_categories_and_predicts_probabilities(frame, family):
    """Native categories in, [1 - p, p] out; the fitted attributes scikit-learn expects; same seed,
    same model; the category column is split as a category (a frame whose categories come in
    another order scores the same, one whose levels are scrambled does not)."""
    X, y = frame
    model = CLASSES[family](random_state=0, **FAST[family]).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert model.feature_names_in_.tolist() == ["a", "b", "plan"] and model.n_features_in_ == 3
    assert model.classes_.tolist() == [0, 1] and model.best_iteration_ >= 0
    assert ((model.predict(X) == 1) == (proba[:, 1] > 0.5)).all()
    np.testing.assert_array_equal(clone(model).fit(X, y).predict_proba(X), proba)  # deterministic
    if family == "lightgbm":
        assert model.booster_.pandas_categorical == [list(X["plan"].cat.categories)]
        assert model.booster_.num_trees() == model.best_iteration_ + 1
    else:
        assert model.model_.get_cat_feature_indices() == [2]
        assert model.model_.tree_count_ == model.best_iteration_ + 1
    reordered = X.assign(plan=X["plan"].cat.reorder_categories(X["plan"].cat.categories[::-1]))
    np.testing.assert_allclose(model.predict_proba(reordered), proba, rtol=0, atol=1e-12)
    levels = X["plan"].cat.categories
    scrambled = X.assign(plan=X["plan"].cat.rename_categories(dict(zip(levels, np.roll(levels, 1), strict=True))))
    assert not np.allclose(model.predict_proba(scrambled), proba)
    with pytest.raises(ValueError, match="two classes"):
        CLASSES[family]().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="2 features"):
        model.predict_proba(X[["a", "b"]])


@pytest.mark.parametrize("family", list(CLASSES))
def test_early_stopping_holds_out_part_of_the_training_rows(frame, family):
    """On a label of pure noise the held-out share of the training rows stops boosting long before
    n_estimators; without early stopping every round is kept; another seed, another model."""
    X, _ = frame
    noise = np.random.default_rng(1).integers(0, 2, len(X))
    stopped = CLASSES[family](n_estimators=300, early_stopping_rounds=10, random_state=0, **FAST[family]).fit(X, noise)
    assert stopped.best_iteration_ < 60
    full = CLASSES[family](n_estimators=40, early_stopping_rounds=None, random_state=0, **FAST[family]).fit(X, noise)
    assert full.best_iteration_ == 39
    other = CLASSES[family](n_estimators=300, early_stopping_rounds=10, random_state=1, **FAST[family]).fit(X, noise)
    assert not np.array_equal(other.predict_proba(X), stopped.predict_proba(X))


@pytest.mark.parametrize("family", list(CLASSES))
def test_balanced_class_weight_weights_the_positives(frame, family):
    """class_weight="balanced" weights positives by negatives / positives: the mean score rises."""
    X, y = frame
    kw = {"n_estimators": 30, "early_stopping_rounds": None, "random_state": 0, **FAST[family]}
    model = CLASSES[family](class_weight="balanced", **kw).fit(X, y)
    assert model.scale_pos_weight_ == pytest.approx((y == 0).sum() / (y == 1).sum())
    plain = CLASSES[family](**kw).fit(X, y)
    assert plain.scale_pos_weight_ == 1.0
    assert model.predict_proba(X)[:, 1].mean() > plain.predict_proba(X)[:, 1].mean() + 0.05


@pytest.mark.parametrize("family", list(CLASSES))
def test_saved_with_skops_in_the_library_format_and_loaded_back(tmp_path, frame, family):
    """The registered form of a model holding the family's classifier saves with skops, names no type of
    the library (the model is the library's own text or cbm bytes, nothing pickled), loads back with the
    trusted list and predicts the same; its serving requirements add the library, and only for it."""
    X, y = frame
    model = CLASSES[family](n_estimators=50, random_state=0, **FAST[family]).fit(X, y)
    calibrator = ScoreCalibrator("sigmoid", (True,)).fit(model.predict_proba(X)[:, 1], y)
    registered = ChurnClassifier(members=[model], calibrator=calibrator, names=[family])
    path = str(tmp_path / "model.skops")
    dump_pipeline(registered, path)
    types = saved_types(path)
    assert f"{CLASSES[family].__module__}.{CLASSES[family].__name__}" in types and set(types) <= set(TRUSTED_TYPES)
    assert not [t for t in types if t.split(".")[0] in ("lightgbm", "catboost")]
    with zipfile.ZipFile(path) as zf:
        assert b"pickle" not in zf.read("schema.json").lower()
        schema = json.loads(zf.read("schema.json"))
        arrays = [zf.read(name) for name in zf.namelist() if name != "schema.json"]
    # each library's own model format: LightGBM's text model (a string in the schema), CatBoost's cbm bytes
    if family == "lightgbm":
        assert json.loads(_node(schema, "booster_text_")["content"]).startswith("tree\nversion=v")
    else:
        assert _node(schema, "model_cbm_")["__class__"] == "bytes" and any(a.startswith(b"CBM1") for a in arrays)
    back = load_pipeline(path)
    np.testing.assert_array_equal(back.predict_proba(X), registered.predict_proba(X))
    needs = requirements(types)
    assert f"{family}=={LIBRARY[family].__version__}" in needs
    assert requirements() == [r for r in needs if not r.startswith(family)]
    # pickle (how dask moves a fitted model between processes) goes through the same state
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(model)).predict_proba(X), model.predict_proba(X))


def test_catboost_keeps_many_level_columns_as_categories():
    """CatBoost's pipeline passes a column of more than 16 levels as a category (ordered target
    statistics); the other native-categorical families get its level codes as a number."""
    job = load_job(ROOT / "jobs" / "train-mlc.yaml")
    assert len(job.table.categorical["state"].values) > 16
    raw = pd.read_csv(ROOT / job.data.source, dtype=str, keep_default_na=False).head(400)
    rows, _ = validate_partition(raw, job.table, "mlc.csv", np.arange(len(raw)))
    for family, kind in [("catboost", pd.CategoricalDtype), ("lightgbm", np.float64), ("xgboost", np.float64)]:
        encode = build_pipeline(job.table, family, "none", 0).named_steps["encode"]
        out = encode.fit(rows[job.table.features]).transform(rows[job.table.features])
        assert isinstance(out["state"].dtype, pd.CategoricalDtype) if kind is pd.CategoricalDtype \
            else out["state"].dtype == kind, family


def test_new_families_are_not_searched_by_default_and_grids_are_checked():
    """A job that names no families searches the default seven; LightGBM and CatBoost are there to
    choose; a grid value their constraints refuse is named before any cluster starts."""
    assert set(FAMILY_NAMES) - set(DEFAULT_FAMILIES) == {"lightgbm", "catboost"}
    assert load_job(ROOT / "jobs" / "train-mlc.yaml").model.families == list(DEFAULT_FAMILIES)
    for family, bad in [("lightgbm", "num_leaves: [1]"), ("catboost", "depth: [0]")]:
        job = load_job(ROOT / "jobs" / "train.yaml", [f"model.families=[{family}]",
                                                      f"model.grids={{{family}: {{{bad}}}}}"])
        with pytest.raises(Exception, match=rf"model.grids.{family}: grid point .*{CLASSES[family].__name__}"):
            check_grids(job)
        check_grids(load_job(ROOT / "jobs" / "train.yaml", [f"model.families=[{family}]"]))  # default grid passes
