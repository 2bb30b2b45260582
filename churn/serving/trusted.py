"""Saving and loading the fitted inference pipeline with skops, trusting only a fixed list of types.

The list is code, not a setting: a serving host's environment cannot widen what a model file
may instantiate. The saved pipeline holds no resampling step (samplers do nothing at predict
time, and a fitted SMOTE carries data-dependent neighbour trees), so the list needs no
data-dependent types. The train job checks the round trip on a tiny fit before its search.
"""

from __future__ import annotations

from typing import Any

import skops.io as sio

# Beyond skops' defaults (scikit-learn's estimators, NumPy arrays and builtins): the inner
# objects of the estimators churn fits, and churn's own feature steps.
TRUSTED_TYPES: tuple[str, ...] = (
    "numpy.dtype",
    "scipy.sparse._csr.csr_matrix",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    # native-categorical HGB keeps a preprocessor whose numeric columns pass through
    # partial(check_array, ...); skops checks the wrapped function against this list too
    "functools.partial",
    "sklearn.utils.validation.check_array",
    "sklearn.calibration._CalibratedClassifier",  # Platt-scaled SVC of models registered before 2026-11-24
    "sklearn.calibration._SigmoidCalibration",
    # NumericBasis keeps a fitted SplineTransformer: one scipy BSpline per column, which holds
    # scipy's array-namespace asarray function
    "scipy.interpolate._bsplines.BSpline",
    "scipy._lib.array_api_compat.numpy._aliases.asarray",
    "churn.serving.calibration.ChurnClassifier",
    "churn.serving.calibration.ScoreCalibrator",
    "churn.serving.calibration.FoldAverage",  # a bagged member: k fitted fold pipelines (model.bagging)
    "churn.modeling.features.TableCoercer",
    "churn.modeling.features.CategoryEncoder",
    "churn.modeling.features.GroupSums",
    "churn.modeling.features.CorrelationFilter",
    "churn.modeling.features.ImportanceSelector",
    "churn.modeling.features.NumericBasis",
    "churn.modeling.trees.LaplaceDecisionTree",
    # saves its booster as XGBoost's own UBJSON bytes (churn.modeling.boosting): no XGBoost type in the file
    "churn.modeling.boosting.XGBoostClassifier",
    # LightGBM's text model and CatBoost's cbm bytes (churn.modeling.lgbm, churn.modeling.catboost_family):
    # no LightGBM or CatBoost type in the file either
    "churn.modeling.lgbm.LightGBMClassifier",
    "churn.modeling.catboost_family.CatBoostClassifier",
)


class UntrustedModelError(ValueError):
    """A model file names types outside :data:`TRUSTED_TYPES`; nothing from it was loaded."""


def saved_types(path: str) -> list[str]:
    """Every type the file at ``path`` would instantiate beyond skops' defaults (trusted here or not)."""
    return sorted(sio.get_untrusted_types(file=path))


def untrusted_types(path: str) -> list[str]:
    """Types the file at ``path`` would instantiate that are neither skops defaults nor trusted here."""
    return sorted(set(saved_types(path)) - set(TRUSTED_TYPES))


def load_pipeline(path: str) -> Any:
    """Load a pipeline saved by :func:`dump_pipeline`; refuse, before running anything, one that
    needs a type outside the trusted list."""
    extra = untrusted_types(path)
    if extra:
        raise UntrustedModelError(f"{path} needs types that are not trusted: {', '.join(extra)}")
    return sio.load(path, trusted=list(TRUSTED_TYPES))


def dump_pipeline(pipeline: Any, path: str) -> None:
    """Save ``pipeline`` with skops, then load it back the way serving will (the check that counts)."""
    sio.dump(pipeline, path)
    load_pipeline(path)
