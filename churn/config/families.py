"""Model family names and grid rules: a leaf module (no scikit-learn import).

The estimators themselves are built in :mod:`churn.modeling.pipeline`; a grid's parameter
names and values are checked against those estimators by the preflight
(:mod:`churn.modeling.preflight`), before any cluster starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from churn.config.errors import shown


@dataclass(frozen=True)
class FamilyRules:
    """What the config layer knows of a family: its name, default grid and how grid keys map."""

    name: str
    grid: dict[str, list[Any]] = field(default_factory=dict)  # searched when the job gives none
    supports_class_weight: bool = True
    supports_smote: bool = True  # False where the model reads categories natively (no numbers to interpolate)
    max_rows: int | None = None  # training rows per fit (a seeded, stratified sample): for costs that grow
    # faster than the rows; the validation part of every fold stays whole, so scores stay comparable
    default: bool = True  # searched by a job that names no families (model.families left out)


# Default grids: sized so the default job on Telco (5,600 training rows, 2 cores) searches every
# family in about 40 s; see bench/results/quality.md for what they reach.
FAMILIES: dict[str, FamilyRules] = {
    f.name: f
    for f in [
        FamilyRules("logistic_regression", {"C": [0.1, 1.0, 10.0], "numeric_basis": ["linear", "spline"]}),
        FamilyRules("decision_tree", {"max_depth": [4, 6, 8], "min_samples_leaf": [20, 50]}),
        FamilyRules("random_forest", {"n_estimators": [100], "min_samples_leaf": [3, 10],
                                      "max_features": ["sqrt"]}),
        # kernel SVC grows with the square of the rows: fitted on at most 4,000 (probabilities come
        # from the calibration map fitted on its out-of-fold decision values, not from Platt's 3-fold CV)
        FamilyRules("svm", {"C": [0.3, 1.0]}, max_rows=4_000),
        FamilyRules("mlp", {"hidden_layer_sizes": [[32]], "alpha": [1e-3, 1e-1]}, supports_class_weight=False),
        FamilyRules("hist_gradient_boosting", {"learning_rate": [0.05], "max_leaf_nodes": [7, 15, 31],
                                               "l2_regularization": [0.0, 1.0]}, supports_smote=False),
        # XGBoost (churn.modeling.boosting): native categories, early stopping on a seeded 10 % of each
        # training fold; class weights become scale_pos_weight
        FamilyRules("xgboost", {"max_depth": [3, 5], "min_child_weight": [1, 10], "learning_rate": [0.1]},
                    supports_smote=False),
        # LightGBM (churn.modeling.lgbm) and CatBoost (churn.modeling.catboost_family): native categories
        # (CatBoost's ordered target statistics), early stopping as for xgboost; not in the default job
        FamilyRules("lightgbm", {"num_leaves": [7, 31], "min_child_samples": [20]}, supports_smote=False,
                    default=False),
        FamilyRules("catboost", {"depth": [4, 6]}, supports_smote=False, default=False),
    ]
}
FAMILY_NAMES = tuple(FAMILIES)
DEFAULT_FAMILIES = tuple(f.name for f in FAMILIES.values() if f.default)  # model.families when a job gives none
# grid keys that set a pipeline step rather than the model (any other key without "__" is the model's)
PIPELINE_KEYS = {"numeric_basis": "encode__num__basis__kind"}  # for one-hot families
PIPELINE_KEY_CHOICES = {"numeric_basis": ("linear", "spline")}
IMBALANCE_MODES = ("none", "class_weight", "smote", "smotenc")
MAX_GRID_POINTS = 5_000  # per family: a larger grid is almost always a typo in a list


def spelled(param: str) -> str:
    """A pipeline parameter as a job's grid spells it (``model__C`` → ``C``)."""
    return next((k for k, v in PIPELINE_KEYS.items() if v == param), param.removeprefix("model__"))


# searched pipeline steps that no grid names: as the job spells them (model.imbalance, model.selection)
STEP_NAMES = {"resample__method": "resample", "select_corr__threshold": "correlation_threshold",
              "select_importance__threshold": "importance_threshold"}


def readable(param: str) -> str:
    """A searched pipeline parameter as a person reads it, for MLflow param names: the job's
    spelling (``encode__num__basis__kind`` → ``numeric_basis``, ``model__C`` → ``C``,
    ``resample__method`` → ``resample``); any other step's path with dots (``a__b`` → ``a.b``)."""
    return STEP_NAMES.get(param) or spelled(param).replace("__", ".")


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
        wrong = [v for v in values if key in PIPELINE_KEY_CHOICES and v not in PIPELINE_KEY_CHOICES[key]]
        if wrong:
            raise ValueError(f"model.grids.{family}.{key}: {', '.join(map(shown, wrong[:5]))} is not one of "
                             f"{', '.join(PIPELINE_KEY_CHOICES[key])}")
        points *= len(values)
    if points > MAX_GRID_POINTS:
        raise ValueError(f"model.grids.{family} has {points:,} grid points; the limit is {MAX_GRID_POINTS:,}")


def imbalance_modes(family: str, modes: list[str] | tuple[str, ...] | str) -> list[str]:
    """The imbalance treatments really searched for ``family``: the job's list without those the
    family cannot do (MLP has no class weights; native-categorical HGB and XGBoost get no SMOTE). A family
    left with none searches ``none``."""
    fam = rules(family)
    wanted = [modes] if isinstance(modes, str) else list(modes)
    usable = [m for m in wanted
              if not (m == "class_weight" and not fam.supports_class_weight)
              and not (m in ("smote", "smotenc") and not fam.supports_smote)]
    return usable or ["none"]


def imbalance_used(family: str, modes: list[str] | tuple[str, ...] | str) -> str:
    """The searched treatments as text, for tables and tags."""
    return "|".join(imbalance_modes(family, modes))
