"""Model family names and grid rules: a leaf module (no scikit-learn import).

The estimators themselves are built in :mod:`churn.modeling.pipeline`; a grid's parameter
names and values are checked against those estimators by the preflight
(:mod:`churn.modeling.preflight`), before any cluster starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FamilyRules:
    """What the config layer knows of a family: its name, default grid and how grid keys map."""

    name: str
    grid: dict[str, list[Any]] = field(default_factory=dict)  # searched when the job gives none
    param_prefix: str = ""  # where grid keys live inside the estimator (svm: the calibrated SVC)
    supports_class_weight: bool = True


FAMILIES: dict[str, FamilyRules] = {
    f.name: f
    for f in [
        FamilyRules("logistic_regression", {"C": [0.01, 0.1, 1.0, 10.0]}),
        FamilyRules("decision_tree", {"max_depth": [3, 5, 8, None], "min_samples_leaf": [1, 5, 20]}),
        FamilyRules("random_forest", {"n_estimators": [10, 20, 50, 100], "min_samples_split": [2, 5, 10],
                                      "min_samples_leaf": [1, 2, 4]}),
        FamilyRules("svm", {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.01]}, param_prefix="estimator__"),
        FamilyRules("mlp", {"hidden_layer_sizes": [[32], [64, 32]], "alpha": [1e-4, 1e-2]},
                    supports_class_weight=False),
        FamilyRules("hist_gradient_boosting", {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31],
                                               "max_iter": [100, 200]}),
    ]
}
FAMILY_NAMES = tuple(FAMILIES)
IMBALANCE_MODES = ("smote", "smotenc", "class_weight", "none")
MAX_GRID_POINTS = 5_000  # per family: a larger grid is almost always a typo in a list


def rules(name: str) -> FamilyRules:
    """The rules of family ``name``; a clear error naming the choices for an unknown one."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose from {', '.join(FAMILY_NAMES)}") from None


def check_grid_shape(family: str, grid: dict[str, Any]) -> None:
    """Every grid entry is a non-empty list, and the grid is not absurdly large."""
    rules(family)
    points = 1
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"model.grids.{family}.{key} must be a non-empty list")
        points *= len(values)
    if points > MAX_GRID_POINTS:
        raise ValueError(f"model.grids.{family} has {points:,} grid points; the limit is {MAX_GRID_POINTS:,}")


def imbalance_used(family: str, imbalance: str) -> str:
    """What the pipeline really does about imbalance (MLP has no class weights)."""
    if imbalance == "class_weight" and not rules(family).supports_class_weight:
        return f"none ({family} has no class weights)"
    return imbalance
