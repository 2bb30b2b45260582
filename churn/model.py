"""Model families and the pipeline that wraps them.

The pipeline is an ``imblearn.pipeline.Pipeline``: coerce → preprocess (impute, encode,
scale) → [SMOTE] → model, so SMOTE resamples only the training part of each CV fold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from churn.config import TableSchema
from churn.features import TableCoercer


@dataclass(frozen=True)
class Family:
    """A model family: how to build its estimator and the grid searched by default."""

    name: str
    build: Callable[[int, bool], BaseEstimator]  # (seed, balanced class weights) -> estimator
    grid: dict[str, list[Any]]
    supports_class_weight: bool = True


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
        Family("svm",
               lambda s, b: SVC(kernel="rbf", probability=True, random_state=s, class_weight=_cw(b)),
               {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.01]}),
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


def preprocessor(schema: TableSchema) -> ColumnTransformer:
    """Impute + scale numerics, impute + one-hot encode categoricals."""
    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline([
        ("impute", SimpleImputer(strategy="most_frequent")),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])
    return ColumnTransformer(
        [("num", numeric, list(schema.numeric)), ("cat", categorical, list(schema.categorical))],
        verbose_feature_names_out=False,
    )


def build_pipeline(schema: TableSchema, family_name: str, imbalance: str, seed: int) -> ImbPipeline:
    """coerce → preprocess → [SMOTE] → model, every random step seeded."""
    fam = family(family_name)
    steps: list[tuple[str, Any]] = [
        ("coerce", TableCoercer(numeric=list(schema.numeric), categorical=list(schema.categorical))),
        ("prep", preprocessor(schema)),
    ]
    if imbalance == "smote":
        steps.append(("smote", SMOTE(random_state=seed)))
    steps.append(("model", fam.build(seed, imbalance == "class_weight" and fam.supports_class_weight)))
    return ImbPipeline(steps)


def grid_for(family_name: str, grid: dict[str, list[Any]] | None) -> dict[str, list[Any]]:
    """The job's grid (or the family default), keyed for the pipeline's ``model`` step."""
    chosen = grid if grid is not None else family(family_name).grid
    out = {}
    for key, values in chosen.items():
        name = key if "__" in key else f"model__{key}"
        out[name] = [tuple(v) if isinstance(v, list) else v for v in values]
    return out
