"""The registered model: the inference pipeline logged as a pyfunc model, and its alias."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from packaging.requirements import InvalidRequirement, Requirement

import churn.serving
from churn.config import ConfigError, TableSchema
from churn.serving.pyfunc import predict_frame, untyped
from churn.serving.trusted import dump_pipeline, saved_types
from churn.tracking.verify import record_digests, verified_model

log = logging.getLogger(__name__)

MODEL_CODE = Path(churn.serving.__file__).parent / "model_code.py"  # MLflow models-from-code file
PACKAGE_DIR = Path(churn.serving.__file__).parents[1]
# The part of churn shipped with the model (``code_paths``) so that it loads where churn is not
# installed: the serving code and the feature steps the pickled pipeline names (no dask, no
# pydantic, no training code).
SERVING_CODE = ("__init__.py", "serving", "modeling/__init__.py", "modeling/features.py", "modeling/trees.py",
                "modeling/boosting.py", "modeling/lgbm.py", "modeling/catboost_family.py")


# The shipped packages' __init__: MLflow puts the model's code folder first on sys.path and
# leaves it there, so where churn is installed as well the rest of it must stay importable.
SHIPPED_INIT = '''"""Part of churn, shipped with a registered model to load and predict where churn is not installed.

Where churn is installed too, its other modules still import from the installation.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
'''


def serving_code(into: Path) -> Path:
    """Copy :data:`SERVING_CODE` into ``into/churn``, keeping the package layout (with
    :data:`SHIPPED_INIT` as the packages' ``__init__``); return that folder."""
    root = into / "churn"
    for rel in SERVING_CODE:
        src, dst = PACKAGE_DIR / rel, root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            # server.py is `churn serve`'s HTTP app, not needed to load and predict
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "server.py"))
        elif src.name == "__init__.py":
            dst.write_text(SHIPPED_INIT)
        else:
            shutil.copy2(src, dst)
    return root

# what the registered model needs to load and predict (no dask, no pydantic, no imbalanced-learn)
SERVING_REQUIREMENTS = ("scikit-learn", "skops", "pandas", "numpy", "scipy", "mlflow")
# ... and what a model needs only when its file holds a type: the type -> the module that type imports
TYPE_REQUIREMENTS = {"churn.modeling.boosting.XGBoostClassifier": "xgboost",
                     "churn.modeling.lgbm.LightGBMClassifier": "lightgbm",
                     "churn.modeling.catboost_family.CatBoostClassifier": "catboost"}


def distribution(module: str) -> str:
    """The installed distribution that provides the top-level ``module`` (XGBoost comes as
    ``xgboost`` or as ``xgboost-cpu``, both importing ``xgboost``)."""
    names = packages_distributions().get(module)
    if not names:
        raise ConfigError(f"the model needs the Python module {module!r}, which no installed distribution provides")
    return sorted(set(names))[0]


def requirements(types: Iterable[str] = ()) -> list[str]:
    """The serving requirements pinned at the versions the model was trained with: the common ones,
    and those of the ``types`` its file holds (:func:`churn.serving.trusted.saved_types`)."""
    extra = sorted({distribution(TYPE_REQUIREMENTS[t]) for t in types if t in TYPE_REQUIREMENTS})
    return [f"{p}=={version(p)}" for p in (*SERVING_REQUIREMENTS, *extra)]


def serving_rules(schema: TableSchema) -> dict[str, Any]:
    """The table's validation rules as plain JSON for the served model (no pydantic there), with
    the rest of the table (id, label and its values, ignored columns): score and monitor jobs
    check their rows with these rules (:mod:`churn.tracking.model_rules`)."""
    return {"numeric": {c: r.model_dump() for c, r in schema.numeric.items()},
            "categorical": {c: r.model_dump() for c, r in schema.categorical.items()},
            "id": schema.id, "label": schema.label, "positive": schema.positive, "negative": schema.negative,
            "ignore": list(schema.ignore)}


def signature_for(inferred: ModelSignature, schema: TableSchema) -> ModelSignature:
    """The inferred signature, with every numeric column of any type (:func:`untyped`).

    MLflow would cast their values before churn's rules see them; it also refuses int64 for a
    ``double`` column, and a ``long`` column cannot hold a blank.
    """
    return ModelSignature(untyped(inferred.inputs, schema.numeric), inferred.outputs)


def log_model(pipeline: Any, example: pd.DataFrame, threshold: float, registered_name: str,
              schema: TableSchema, reference: dict[str, Any] | None = None) -> Any:
    """Log the fitted model as a pyfunc model with signature, example, the table's rules and the
    training profile that monitoring compares batches with; register it.

    The threshold is model config (MLflow also logs it as the run's param ``threshold``); the rules
    are the artifact ``rules`` (``rules.json``, read by the model) and the MLmodel file's metadata
    (read by :func:`churn.tracking.model_rules.logged_rules` without running the model's code):
    as model config, MLflow would log every rule as a run param."""
    rules = serving_rules(schema)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipeline.skops")
        dump_pipeline(pipeline, path)
        artifacts = {"pipeline": path, "rules": os.path.join(tmp, "rules.json")}
        Path(artifacts["rules"]).write_text(json.dumps(rules, indent=1))
        if reference is not None:
            artifacts["reference_profile"] = os.path.join(tmp, "reference_profile.json")
            Path(artifacts["reference_profile"]).write_text(json.dumps(reference))
        output = predict_frame(pipeline, example, threshold)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*integer column.*")
            signature = signature_for(infer_signature(example, output), schema)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            model_config={"threshold": float(threshold)},
            metadata={"rules": rules},
            artifacts=artifacts,
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
            pip_requirements=requirements(saved_types(path)),
            code_paths=[str(serving_code(Path(tmp)))],
        )
    version = str(info.registered_model_version)
    try:
        record_digests(registered_name, version)  # checked before every load
    except BaseException:  # a version without digests never loads: not left behind (nor found as a rerun's)
        with contextlib.suppress(Exception):
            mlflow.MlflowClient().delete_model_version(registered_name, version)
        raise
    return info


def describe_version(name: str, version: str, description: str, tags: dict[str, str]) -> None:
    """Give model version ``version`` of ``name`` its description and tags (what the registry page shows)."""
    client = mlflow.MlflowClient()
    client.update_model_version(name, version, description=description)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def set_alias(name: str, alias: str, version: str | int) -> None:
    """Point ``models:/name@alias`` at ``version``."""
    mlflow.MlflowClient().set_registered_model_alias(name, alias, str(version))


def alias_version(name: str, alias: str) -> str | None:
    """The version ``models:/name@alias`` points at now, read from the registry; None when the
    model or the alias does not exist."""
    try:
        version = mlflow.MlflowClient().get_registered_model(name).aliases.get(alias)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    return None if version is None else str(version)


def input_example(rows: pd.DataFrame, schema: TableSchema, n: int = 5) -> pd.DataFrame:
    """A few complete feature rows typed as a caller sends them (integer columns as int64)."""
    example = rows[schema.features].dropna().head(n).reset_index(drop=True)
    for col, rule in schema.numeric.items():
        if rule.integer and not rule.nullable:
            example[col] = example[col].astype("int64")
    for col in schema.categorical:
        example[col] = example[col].astype(object)
    return example


def environment_mismatches(folder: Path) -> list[str]:
    """How this environment differs from the one the model in ``folder`` was saved with: each
    requirement of its ``requirements.txt`` that the installed version does not meet, and a Python
    whose major.minor differs from its MLmodel's.

    MLflow makes the same checks when it loads a model, but looks the installed versions up
    through ``packages_distributions()``, which reads the file list of every installed
    distribution: about a second of a ``churn score``. Here each requirement's version is read
    by its distribution name.
    """
    out = []
    reqs = folder / "requirements.txt"
    for line in reqs.read_text().splitlines() if reqs.is_file() else []:
        try:
            req = Requirement(line.split("#")[0].strip())
        except InvalidRequirement:  # blank lines, comments, -r other-file, URLs: MLflow skips them too
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            out.append(f"{req.name} (required: {req}, not installed)")
            continue
        if req.specifier and not req.specifier.contains(installed):
            out.append(f"{req.name} (required: {req}, installed: {installed})")
    saved = mlflow.models.Model.load(str(folder / "MLmodel")).flavors.get("python_function", {}).get(
        "python_version")
    here = platform.python_version()
    if saved and saved.split(".")[:2] != here.split(".")[:2]:
        out.append(f"Python (saved with {saved}, running {here})")
    return out


def _load(model_uri: str) -> Any:
    """The pyfunc model in the local folder ``model_uri``, a warning naming each way this
    environment differs from the model's (:func:`environment_mismatches`); a URI that names
    nothing is a ConfigError naming it."""
    path = list(sys.path)
    try:
        folder = Path(model_uri)
        if folder.is_dir():
            for problem in environment_mismatches(folder):
                log.warning("model %s was saved in another environment: %s", model_uri, problem)
        # suppress_warnings: MLflow's own check of the same (above, without its slow package scan)
        return mlflow.pyfunc.load_model(model_uri, suppress_warnings=folder.is_dir())
    except MlflowException as exc:
        raise ConfigError(f"model_uri: cannot load {model_uri}: {exc.message}") from None
    finally:
        # MLflow puts the model's code copy first on sys.path; workers started later would then
        # import that copy of churn (perhaps an older one) instead of the installed package
        sys.path[:] = path


@dataclass
class LoadedModel:
    """A logged churn model loaded in the driver: what scoring and monitoring need."""

    pipeline: Any
    threshold: float
    name: str | None
    version: str | None
    reference_profile: str | None  # local path of the training profile, when the model has one
    rules: dict[str, Any] = field(default_factory=dict)  # the table's rules logged with the model

    def reference(self) -> dict[str, Any]:
        """The training profile stored with the model version (for monitoring)."""
        if not self.reference_profile:
            raise ConfigError("model_uri: the model carries no reference profile (trained before monitoring "
                              "existed); train it again to monitor it")
        return json.loads(Path(self.reference_profile).read_text())


def load_churn_model(model_uri: str) -> LoadedModel:
    """Load a registered churn model (``models:/name@alias`` or ``models:/name/version``) once in
    the driver: its files checked against the registry's digests, then loaded from that checked
    copy through MLflow (so the trusted-type check runs)."""
    checked = verified_model(model_uri)  # the files the registry recorded, before any of their code runs
    churn_model = _load(str(checked.path)).unwrap_python_model()
    return LoadedModel(churn_model.pipeline, float(churn_model.threshold), checked.name, checked.version,
                       churn_model.reference_profile, churn_model.rules)
