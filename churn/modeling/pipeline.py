"""The estimator of each model family, and the pipeline that wraps it.

The pipeline is an ``imblearn.pipeline.Pipeline``: coerce → impute and encode → feature
selection → resample (row cap, SMOTE) → model, so the row cap and SMOTE act only on the
training part of each CV fold. Native-categorical HGB and XGBoost get their categories as categories.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imblearn.over_sampling import SMOTENC
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import BaseEstimator, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from churn.config import SelectionSpec, TableSchema
from churn.config.families import FAMILY_NAMES, PIPELINE_KEYS, imbalance_modes, rules
from churn.modeling.boosting import XGBoostClassifier
from churn.modeling.catboost_family import CatBoostClassifier
from churn.modeling.features import (
    CategoryEncoder,
    CorrelationFilter,
    GroupSums,
    ImportanceSelector,
    NumericBasis,
    TableCoercer,
)
from churn.modeling.lgbm import LightGBMClassifier
from churn.modeling.resample import Resampler
from churn.modeling.trees import LaplaceDecisionTree

MAX_ONEHOT_LEVELS = 32  # per column; rarer levels share one "infrequent" column (high-cardinality tables)
# families that split on categories themselves
NATIVE_CATEGORIES = ("hist_gradient_boosting", "xgboost", "lightgbm", "catboost")


def _cw(balanced: bool) -> str | None:
    return "balanced" if balanced else None


# family name -> (seed, balanced class weights) -> estimator; names and grids: churn.config.families
ESTIMATORS: dict[str, Callable[[int, bool], BaseEstimator]] = {
    "logistic_regression": lambda s, b: LogisticRegression(max_iter=2000, random_state=s, class_weight=_cw(b)),
    # Laplace-corrected leaves: no pure leaf scores exactly 0 or 1 (see churn.modeling.trees)
    "decision_tree": lambda s, b: LaplaceDecisionTree(random_state=s, class_weight=_cw(b)),
    "random_forest": lambda s, b: RandomForestClassifier(random_state=s, n_jobs=1, class_weight=_cw(b)),
    # kernel SVC scores with its decision function; the calibration map turns the champion's scores
    # into probabilities (no Platt scaling inside each fit: that costs three more SVC fits)
    "svm": lambda s, b: SVC(kernel="rbf", random_state=s, class_weight=_cw(b)),
    "mlp": lambda s, b: MLPClassifier(max_iter=300, early_stopping=True, random_state=s),
    # early stopping on a seeded 10 % of the training rows picks the number of trees
    "hist_gradient_boosting": lambda s, b: HistGradientBoostingClassifier(
        max_iter=500, early_stopping=True, n_iter_no_change=20, random_state=s, class_weight=_cw(b)),
    # the same stopping rule (up to 500 rounds, 20 without gain on a seeded 10 %); one thread per fit
    "xgboost": lambda s, b: XGBoostClassifier(n_estimators=500, early_stopping_rounds=20, validation_fraction=0.1,
                                              random_state=s, class_weight=_cw(b), n_jobs=1),
    # LightGBM and CatBoost: the same stopping rule and one thread per fit
    "lightgbm": lambda s, b: LightGBMClassifier(n_estimators=500, early_stopping_rounds=20, validation_fraction=0.1,
                                                random_state=s, class_weight=_cw(b), n_jobs=1),
    "catboost": lambda s, b: CatBoostClassifier(n_estimators=500, early_stopping_rounds=20, validation_fraction=0.1,
                                                random_state=s, class_weight=_cw(b), n_jobs=1),
}
assert set(ESTIMATORS) == set(FAMILY_NAMES), "every family in churn.config.families needs a builder"


def build_estimator(family_name: str, seed: int, balanced: bool = False) -> BaseEstimator:
    """The family's estimator, seeded; ``balanced`` sets balanced class weights where it has them."""
    fam = rules(family_name)
    return ESTIMATORS[fam.name](seed, balanced and fam.supports_class_weight)


def _impute(schema: TableSchema, numeric: list[str]) -> ColumnTransformer:
    return ColumnTransformer(
        [("num", SimpleImputer(strategy="median"), numeric),
         ("cat", SimpleImputer(strategy="most_frequent"), list(schema.categorical))],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")


def _encode(schema: TableSchema, numeric: list[str], impute: bool) -> ColumnTransformer:
    """Scale numbers and one-hot encode categories; with ``impute``, fill the gaps first in the
    same transformer (one ColumnTransformer instead of two: about 5 ms less per served request)."""
    num = [("basis", NumericBasis()), ("scale", StandardScaler())]  # basis: a grid switch (numeric_basis)
    cat: Any = OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_ONEHOT_LEVELS,
                             sparse_output=False)
    if impute:
        num = [("impute", SimpleImputer(strategy="median")), *num]
        cat = Pipeline([("impute", SimpleImputer(strategy="most_frequent")), ("onehot", cat)])
    return ColumnTransformer([("num", Pipeline(num), numeric), ("cat", cat, list(schema.categorical))],
                             verbose_feature_names_out=False)


def _native(schema: TableSchema, family_name: str) -> CategoryEncoder:
    """Numbers as they are (the model handles blanks), text columns as pandas categories. CatBoost
    keeps every kept level of a many-level column as a category: its ordered target statistics
    encode such a column with one number, without the partition splits that overfit many levels."""
    if family_name == "catboost":
        return CategoryEncoder(categorical=list(schema.categorical), max_native_levels=CategoryEncoder().max_levels)
    return CategoryEncoder(categorical=list(schema.categorical))


def build_pipeline(schema: TableSchema, family_name: str, imbalance: str | list[str], seed: int,
                   max_rows: int | None = None, sums: dict[str, list[str]] | None = None) -> ImbPipeline:
    """coerce → (sums) → impute and encode → select → resample → model, every random step seeded.

    ``imbalance`` lists the treatments the grid will search (see :func:`grid_for`);
    ``max_rows`` caps the training rows of each fit; ``sums`` adds :class:`GroupSums` columns
    (new name → the numeric columns it adds up). With ``smotenc`` the oversampling runs
    between imputing and encoding, so SMOTENC sees the categorical columns as categories.
    """
    modes = imbalance_modes(family_name, imbalance)
    coerce = [("coerce", TableCoercer(numeric=list(schema.numeric), categorical=list(schema.categorical)))]
    if sums:
        coerce.append(("sums", GroupSums(groups=sums)))
    numeric = [*schema.numeric, *(sums or {})]
    select = [("select_corr", CorrelationFilter()), ("select_importance", ImportanceSelector(random_state=seed))]
    model = ("model", build_estimator(family_name, seed, modes == ["class_weight"]))
    if modes == ["smotenc"] and schema.categorical:
        sampler = SMOTENC(categorical_features=list(schema.categorical), random_state=seed)
        return ImbPipeline([*coerce, ("impute", _impute(schema, numeric)), ("smote", sampler),
                            ("encode", _encode(schema, numeric, impute=False)), *select, model])
    method = "smote" if modes[0] in ("smote", "smotenc") else "none"
    encode = _native(schema, family_name) if family_name in NATIVE_CATEGORIES else _encode(schema, numeric, impute=True)
    resample = ("resample", Resampler(method=method, max_rows=max_rows, random_state=seed))
    return ImbPipeline([*coerce, ("encode", encode), *select, resample, model])


def imbalance_grid(family_name: str, imbalance: str | list[str]) -> list[dict[str, list[Any]]]:
    """The imbalance treatments as grid entries, each a partial grid: ``none`` and
    ``class_weight`` differ only in the model (they share every fold preparation), ``smote`` in
    the resample step. One mode alone needs no entry (the pipeline is built for it)."""
    modes = imbalance_modes(family_name, imbalance)
    if len(modes) == 1:
        return [{}]
    weighted = rules(family_name).supports_class_weight  # else the model has no class_weight to set
    weights = [w for m, w in (("none", None), ("class_weight", "balanced")) if m in modes]
    parts: list[dict[str, list[Any]]] = []
    if weights:
        parts.append({"resample__method": ["none"], **({"model__class_weight": weights} if weighted else {})})
    if "smote" in modes:
        parts.append({"resample__method": ["smote"], **({"model__class_weight": [None]} if weighted else {})})
    return parts


def imbalance_of(params: dict[str, Any], family_name: str, imbalance: str | list[str]) -> str:
    """The treatment a candidate's parameters stand for."""
    modes = imbalance_modes(family_name, imbalance)
    if len(modes) == 1:
        return modes[0]
    if params.get("resample__method") == "smote":
        return "smote"
    return "class_weight" if params.get("model__class_weight") == "balanced" else "none"


def inference_pipeline(fitted: ImbPipeline) -> Pipeline:
    """The fitted steps that run at predict time, as a plain scikit-learn ``Pipeline``.

    Samplers (``fit_resample``) only act during ``fit``, and a fitted SMOTE holds neighbour
    trees that depend on the data; the saved model leaves them out and predicts the same.
    """
    return Pipeline([(name, step) for name, step in fitted.steps if not hasattr(step, "fit_resample")])


def fresh(pipeline: ImbPipeline, params: dict[str, Any]) -> ImbPipeline:
    """An unfitted copy of ``pipeline`` with ``params`` set."""
    return clone(pipeline).set_params(**params)


def grid_for(family_name: str, grid: dict[str, list[Any]] | None, selection: SelectionSpec | None = None,
             imbalance: str | list[str] = "none") -> list[dict[str, list[Any]]]:
    """The job's grid (or the family default) keyed for the pipeline, plus the selection grid,
    times the imbalance treatments: a list of grids, as ``ParameterGrid`` takes them."""
    fam = rules(family_name)
    chosen = grid if grid is not None else fam.grid
    out: dict[str, list[Any]] = {}
    for key, values in chosen.items():
        name = PIPELINE_KEYS.get(key, key if "__" in key else f"model__{key}")
        out[name] = [tuple(v) if isinstance(v, list) else v for v in values]
    if selection is not None:
        if selection.correlation_threshold != [None]:
            out["select_corr__threshold"] = list(selection.correlation_threshold)
        if selection.importance_threshold != [None]:
            out["select_importance__threshold"] = list(selection.importance_threshold)
    return [{**out, **part} for part in imbalance_grid(family_name, imbalance)]


def kept_features(pipeline: Pipeline) -> list[str]:
    """Names of the encoded features that reach the model after selection."""
    names = pipeline.named_steps["encode"].get_feature_names_out()
    for step in ("select_corr", "select_importance"):
        names = names[pipeline.named_steps[step].get_support()]
    return [str(n) for n in names]
