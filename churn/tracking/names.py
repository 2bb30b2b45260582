"""The experiment, registered-model and alias names of a job, checked before any cluster starts.

MLflow checks these names itself only when it uses them: an alias ``v1`` (reserved for versions)
after the whole job and a registered version, a deleted experiment once the cluster is up. The
same checks run here, with MLflow's own rules, so the spec fails in the preflight instead.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from churn.config import ConfigError, TrackingSpec
from churn.config.errors import cut, shown
from churn.tracking.store import TrackingError


def check_names(spec: TrackingSpec, *, registry: bool = True) -> None:
    """Refuse a name MLflow would refuse: the experiment's, and (``registry``) the registered
    model's and the alias's, with MLflow's own validators (private, but they are the rules its
    store applies; reimplementing them would drift from the installed MLflow)."""
    from mlflow.utils import validation

    checks = [("tracking.experiment", spec.experiment, [validation._validate_experiment_name])]
    if registry:
        checks += [("tracking.registered_model", spec.registered_model, [validation._validate_model_name])]
    for key, value, validators in checks:
        _validated(key, value, validators)
    if registry:
        check_alias("tracking.alias", spec.alias)


def check_alias(key: str, alias: str) -> None:
    """Refuse an alias MLflow would refuse (``v2`` and ``latest`` are reserved), naming ``key``."""
    from mlflow.utils import validation

    _validated(key, alias, [validation._validate_model_alias_name, validation._validate_model_alias_name_reserved])


def _validated(key: str, value: str, validators: list) -> None:
    try:
        for validate in validators:
            validate(value)
    except MlflowException as exc:
        raise ConfigError(f"{key}: MLflow refuses {shown(value)}: {cut(exc.message)}") from None


def check_experiment(uri: str, name: str) -> None:
    """Refuse an experiment that exists in the store but is deleted (MLflow cannot start a run in
    it). A SQLite store that does not exist yet is not created here."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return
    from sqlalchemy.exc import SQLAlchemyError  # MLflow's SQL stores raise it for a file that is not a database

    try:
        exp = mlflow.MlflowClient(uri).get_experiment_by_name(name)
    except (MlflowException, SQLAlchemyError) as exc:
        why = str(getattr(exc, "orig", None) or getattr(exc, "message", None) or exc).splitlines()[0]
        raise TrackingError(f"tracking store {uri}: cannot read experiment {shown(name)}: {cut(why)}") from None
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ConfigError(f"tracking.experiment: experiment {name!r} is deleted in {uri}; restore it "
                          f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or name another")
