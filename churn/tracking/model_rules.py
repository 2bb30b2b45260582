"""The table a churn model was logged with, and the table a score or monitor job checks rows with.

A churn model carries its table's rules in its MLmodel file's metadata (``rules``, written by
:func:`churn.tracking.registry.serving_rules`; in its model config before): the numeric and
categorical rules ``churn serve`` checks rows with and, for models logged since, the id, the
label and its values and the ignored columns. ``churn score`` and ``churn monitor`` check their
rows with the same rules: a job without ``schema`` takes the model's table; a job with one must
declare the same features with the same rules, or it is refused with the differences named
(its id, label and ignored columns describe its own files and are kept).
"""

from __future__ import annotations

from typing import Any, TypeVar

import mlflow
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ValidationError

from churn.config import ConfigError, TableSchema
from churn.config.job import CategoricalRule, NumericRule

SpecT = TypeVar("SpecT", bound=BaseModel)

SHOWN = 3  # differences named in one message
LEVELS_SHOWN = 3  # levels named per difference


def logged_rules(model_uri: str) -> dict[str, Any]:
    """The rules in the model's MLmodel file, read as YAML: none of the model's code runs (its
    metadata; in versions logged before, its model config)."""
    try:
        info = mlflow.models.get_model_info(model_uri)
    except (MlflowException, OSError) as exc:
        raise ConfigError(f"model_uri: cannot load {model_uri}: {getattr(exc, 'message', exc)}") from None
    config = info.flavors.get("python_function", {}).get("config") or {}
    rules = (info.metadata or {}).get("rules", config.get("rules"))
    if not isinstance(rules, dict):
        raise ConfigError(f"model_uri: {model_uri} carries no table rules in its MLmodel file (not a churn model)")
    return rules


def _levels(levels: set[str]) -> str:
    shown = sorted(levels)[:LEVELS_SHOWN]
    return ", ".join(repr(v) for v in shown) + (f" and {len(levels) - len(shown)} more" if len(levels) > len(shown)
                                                else "")


def _categorical(col: str, job: CategoricalRule, model: CategoricalRule) -> list[str]:
    where = f"schema.categorical.{col}"
    out = []
    if job.nullable != model.nullable:
        out.append(f"{where}.nullable: {job.nullable} in the job, {model.nullable} in the model")
    if (job.values is None) != (model.values is None):
        out.append(f"{where}: {'any level' if job.values is None else 'listed levels'} in the job, "
                   f"{'any level' if model.values is None else 'listed levels'} in the model")
    elif job.values is not None and model.values is not None:
        extra, lacking = set(job.values) - set(model.values), set(model.values) - set(job.values)
        if extra:
            out.append(f"{where}: the job allows {_levels(extra)}, the model does not")
        if lacking:
            out.append(f"{where}: the model allows {_levels(lacking)}, the job does not")
    return out


def rule_differences(job: TableSchema, rules: dict[str, Any]) -> list[str]:
    """How the job's feature rules differ from the model's ``rules``: one phrase per difference,
    naming the column and the rule; empty when they are the same (levels compare as sets)."""
    numeric = {c: NumericRule.model_validate(r) for c, r in (rules.get("numeric") or {}).items()}
    categorical = {c: CategoricalRule.model_validate(r) for c, r in (rules.get("categorical") or {}).items()}
    out: list[str] = []
    declared = {*job.numeric, *job.categorical}
    for kind, mine, theirs, other in (("numeric", job.numeric, numeric, categorical),
                                      ("categorical", job.categorical, categorical, numeric)):
        out += [f"schema.{kind}: the model's feature {col!r} is not declared" for col in theirs if col not in declared]
        for col, rule in mine.items():
            if col not in theirs:
                flip = "categorical" if kind == "numeric" else "numeric"
                out.append(f"schema.{kind}.{col}: "
                           + (f"{flip} in the model" if col in other else "not a model feature"))
            elif kind == "numeric":
                model_rule = theirs[col]
                out += [f"schema.numeric.{col}.{name}: {getattr(rule, name)!r} in the job, "
                        f"{getattr(model_rule, name)!r} in the model"
                        for name in NumericRule.model_fields if getattr(rule, name) != getattr(model_rule, name)]
            else:
                out += _categorical(col, rule, theirs[col])
    return out


def model_table(job: TableSchema | None, rules: dict[str, Any], model_uri: str) -> TableSchema:
    """The table a score or monitor job checks rows with: the job's when it declares one with the
    model's rules, else the model's; a difference is a ConfigError naming it."""
    if job is not None:
        differences = rule_differences(job, rules)
        if differences:
            more = f" (and {len(differences) - SHOWN} more)" if len(differences) > SHOWN else ""
            raise ConfigError(f"schema: the job's rules differ from those logged with {model_uri}: "
                              + "; ".join(differences[:SHOWN]) + more
                              + " (leave `schema` out of the job to check rows with the model's rules)")
        return job
    if not rules.get("label"):
        raise ConfigError(f"schema: {model_uri} was logged with its feature rules only (no id or label); "
                          "give the table's `schema` in the job")
    try:
        return TableSchema.model_validate({k: v for k, v in rules.items() if k in TableSchema.model_fields})
    except ValidationError as exc:
        raise ConfigError(f"schema: the table logged with {model_uri} is not valid: "
                          f"{exc.errors()[0]['msg']}") from None


def with_model_table(spec: SpecT, rules: dict[str, Any]) -> SpecT:
    """``spec`` (a score or monitor job) with the table its rows are checked with."""
    return spec.model_copy(update={"table": model_table(spec.table, rules, spec.model_uri)})  # type: ignore[attr-defined]
