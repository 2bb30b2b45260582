"""Model families and the pipeline that wraps them.

The pipeline is an ``imblearn.pipeline.Pipeline``: coerce → impute → encode/scale → feature
selection → [SMOTE] → model, so SMOTE resamples only the training part of each CV fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imblearn.over_sampling import SMOTE, SMOTENC
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from churn.config import SelectionSpec, TableSchema
from churn.features import CorrelationFilter, ImportanceSelector, TableCoercer


@dataclass(frozen=True)
class Family:
    """A model family: how to build its estimator and the grid searched by default."""

    name: str
    build: Callable[[int, bool], BaseEstimator]  # (seed, balanced class weights) -> estimator
    grid: dict[str, list[Any]]
    supports_class_weight: bool = True
    param_prefix: str = ""  # where the grid's keys live inside the estimator (svm: the calibrated SVC)


def _cw(balanced: bool) -> str | None:
    return "balanced" if balanced else None


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("logistic_regression",
               lambda s, b: LogisticRegression(max_iter=2000, random_state=s, class_weight=_cw(b)),
               {"C": [0.01, 0.1, 1.0, 10.0]}),
        Family("decision_tree",
               lambda s, b: DecisionTreeClassifier(random_state=s, class_weight=_cw(b)),
               {"max_depth": [3, 5, 8, None], "min_samples_leaf": [1, 5, 20]}),
        Family("random_forest",
               lambda s, b: RandomForestClassifier(random_state=s, n_jobs=1, class_weight=_cw(b)),
               {"n_estimators": [10, 20, 50, 100], "min_samples_split": [2, 5, 10],
                "min_samples_leaf": [1, 2, 4]}),
        Family("svm",  # Platt-scaled kernel SVC: probabilities from sigmoid calibration on 3 folds
               lambda s, b: CalibratedClassifierCV(SVC(kernel="rbf", random_state=s, class_weight=_cw(b)),
                                                   method="sigmoid", cv=3, ensemble=False),
               {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.01]}, param_prefix="estimator__"),
        Family("mlp",
               lambda s, b: MLPClassifier(max_iter=300, early_stopping=True, random_state=s),
               {"hidden_layer_sizes": [[32], [64, 32]], "alpha": [1e-4, 1e-2]},
               supports_class_weight=False),
        Family("hist_gradient_boosting",
               lambda s, b: HistGradientBoostingClassifier(random_state=s, class_weight=_cw(b)),
               {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31], "max_iter": [100, 200]}),
    ]
}


def family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose from {', '.join(FAMILIES)}") from None


def check_grid(family_name: str, grid: dict[str, list[Any]]) -> None:
    """Refuse a grid naming a parameter the family's estimator does not have."""
    fam = family(family_name)
    valid = fam.build(0, False).get_params()
    for key, values in grid.items():
        if fam.param_prefix + key not in valid and key not in valid:
            raise ValueError(f"{family_name} has no parameter {key!r} (grid of model.grids.{family_name})")
        if not isinstance(values, list) or not values:
            raise ValueError(f"model.grids.{family_name}.{key} must be a non-empty list")


def _impute(schema: TableSchema) -> ColumnTransformer:
    return ColumnTransformer(
        [("num", SimpleImputer(strategy="median"), list(schema.numeric)),
         ("cat", SimpleImputer(strategy="most_frequent"), list(schema.categorical))],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")


def _encode(schema: TableSchema) -> ColumnTransformer:
    return ColumnTransformer(
        [("num", StandardScaler(), list(schema.numeric)),
         ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(schema.categorical))],
        verbose_feature_names_out=False,
    )


def build_pipeline(schema: TableSchema, family_name: str, imbalance: str, seed: int) -> ImbPipeline:
    """coerce → impute → encode → select → [SMOTE] → model, every random step seeded.

    With ``smotenc`` the oversampling runs before encoding, on imputed columns, so SMOTENC
    sees the categorical columns as categories.
    """
    fam = family(family_name)
    coerce = ("coerce", TableCoercer(numeric=list(schema.numeric), categorical=list(schema.categorical)))
    select = [("select_corr", CorrelationFilter()), ("select_importance", ImportanceSelector(random_state=seed))]
    model = ("model", fam.build(seed, imbalance == "class_weight" and fam.supports_class_weight))
    if imbalance == "smotenc" and schema.categorical:
        sampler = SMOTENC(categorical_features=list(schema.categorical), random_state=seed)
        steps = [coerce, ("impute", _impute(schema)), ("smote", sampler), ("encode", _encode(schema)),
                 *select, model]
    else:
        steps = [coerce, ("impute", _impute(schema)), ("encode", _encode(schema)), *select]
        if imbalance in ("smote", "smotenc"):
            steps.append(("smote", SMOTE(random_state=seed)))
        steps.append(model)
    return ImbPipeline(steps)


def imbalance_used(family_name: str, imbalance: str) -> str:
    """What the pipeline really does about imbalance (MLP has no class weights)."""
    if imbalance == "class_weight" and not family(family_name).supports_class_weight:
        return "none (mlp has no class weights)"
    return imbalance


def grid_for(family_name: str, grid: dict[str, list[Any]] | None,
             selection: SelectionSpec | None = None) -> dict[str, list[Any]]:
    """The job's grid (or the family default) keyed for the pipeline, plus the selection grid."""
    fam = family(family_name)
    chosen = grid if grid is not None else fam.grid
    out: dict[str, list[Any]] = {}
    for key, values in chosen.items():
        name = key if "__" in key else f"model__{fam.param_prefix}{key}"
        out[name] = [tuple(v) if isinstance(v, list) else v for v in values]
    if selection is not None:
        if selection.correlation_threshold != [None]:
            out["select_corr__threshold"] = list(selection.correlation_threshold)
        if selection.importance_threshold != [None]:
            out["select_importance__threshold"] = list(selection.importance_threshold)
    return out


def kept_features(pipeline: ImbPipeline) -> list[str]:
    """Names of the encoded features that reach the model after selection."""
    names = pipeline.named_steps["encode"].get_feature_names_out()
    for step in ("select_corr", "select_importance"):
        names = names[pipeline.named_steps[step].get_support()]
    return [str(n) for n in names]
