"""Library settings: ``churn/churn.yaml`` merged into ``dask.config`` and read at call time.

The YAML is the only place a default lives. ``register`` runs when this module is first
imported and merges the file *under* whatever the user already has (their YAML files,
``DASK_CHURN__...`` environment variables collected by dask, their ``dask.config.set``), so
it never overrides or wipes a user's setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

DEFAULTS_PATH = Path(__file__).resolve().parents[1] / "churn.yaml"


def defaults() -> dict[str, Any]:
    """The parsed ``churn.yaml``."""
    return yaml.safe_load(DEFAULTS_PATH.read_text())


def register() -> None:
    """Merge churn's defaults into dask's config; existing (user) values win."""
    dask.config.update_defaults(defaults())


def setting(key: str) -> Any:
    """Read one ``churn.*`` setting at call time; a key missing from ``churn.yaml`` is a bug."""
    try:
        return dask.config.get(f"churn.{key}")
    except KeyError:
        raise KeyError(f"churn.{key} is not a setting in {DEFAULTS_PATH.name}") from None


register()
