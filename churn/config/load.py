"""Loading specs: YAML plus ``--set key=value`` overrides into one validated, typed object.

Every problem (missing file, unknown key, wrong type, a file that is not UTF-8 YAML, nested
aliases that expand past ``churn.preflight.spec-values``) becomes one :class:`ConfigError`
naming the key or path, raised before any cluster starts; no message repeats more than a few
hundred characters of a value.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from churn.config.cluster import CLUSTER_SPEC, ClusterSpec
from churn.config.errors import ConfigError, cut, shown
from churn.config.job import JobSpec
from churn.config.monitor import MonitorSpec
from churn.config.paths import with_absolute_paths
from churn.config.score import ScoreSpec
from churn.config.settings import setting

SpecT = TypeVar("SpecT", bound=BaseModel)


def _read_yaml(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} file {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                          f"{exc.start:,}); save it as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} file {p} is not valid YAML: {cut(str(exc))}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {p} must hold a mapping at the top level")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides; values are parsed as YAML scalars/lists."""
    out = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {shown(item)}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        parts = [k for k in key.strip().split(".") if k]
        if not parts:
            raise ConfigError(f"--set {shown(item)}: empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: {'.'.join(parts[: i + 1])} is not a mapping")
            node = nxt
        node[parts[-1]] = value
    return out


def expanded_size(data: Any, limit: int) -> int:
    """How many values ``data`` holds with every YAML alias written out (a mapping's keys and values,
    a list's items), counted only until past ``limit``: nested aliases (a "billion laughs") are
    shared objects once loaded, but every validator, message and log that walks them expands them.
    PyYAML's safe loader has no limit of its own on alias expansion, hence this count."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack += [*node.keys(), *node.values()]
        elif isinstance(node, list):
            stack += node
    return count


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{source}: {cut(loc)}: {cut(msg)}")
    return "\n".join(lines)


def _load(model: type[SpecT] | TypeAdapter[Any], what: str, path: str | os.PathLike[str],
          overrides: list[str] | None) -> Any:
    data = apply_overrides(_read_yaml(path, what), overrides or [])
    limit = int(setting("preflight.spec-values"))
    if expanded_size(data, limit) > limit:
        raise ConfigError(f"{what} file {path}: more than {limit:,} values once its YAML aliases are written out "
                          "(nested aliases); write the values out, or use fewer aliases")
    try:
        return model.validate_python(data) if isinstance(model, TypeAdapter) else model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None


def load_job(path: str | os.PathLike[str], overrides: list[str] | None = None) -> JobSpec:
    """Build a validated :class:`JobSpec` from a YAML file and ``--set`` overrides (local paths
    made absolute: :mod:`churn.config.paths`)."""
    return with_absolute_paths(_load(JobSpec, "job spec", path, overrides))


def load_score_job(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ScoreSpec:
    """Build a validated :class:`ScoreSpec` from a YAML file and ``--set`` overrides (local paths
    made absolute)."""
    return with_absolute_paths(_load(ScoreSpec, "score job spec", path, overrides))


def load_monitor_job(path: str | os.PathLike[str], overrides: list[str] | None = None) -> MonitorSpec:
    """Build a validated :class:`MonitorSpec` from a YAML file and ``--set`` overrides (local paths
    made absolute)."""
    return with_absolute_paths(_load(MonitorSpec, "monitor job spec", path, overrides))


def load_cluster(path: str | os.PathLike[str], overrides: list[str] | None = None) -> ClusterSpec:
    """Build a validated cluster spec (its class picked by ``kind``) from a YAML file."""
    return _load(CLUSTER_SPEC, "cluster spec", path, overrides)
