"""Register the library defaults (``churn.yaml``) with ``dask.config``."""

from __future__ import annotations

import os
from typing import Any

import dask.config
import yaml

_PATH = os.path.join(os.path.dirname(__file__), "churn.yaml")


def register() -> None:
    """Merge churn's defaults into dask's config without overriding user settings."""
    with open(_PATH) as fh:
        defaults = yaml.safe_load(fh)
    dask.config.update_defaults(defaults)
    # env vars (DASK_CHURN__...) are collected by dask at import; refresh so they win.
    dask.config.refresh()


def setting(key: str, default: Any = None) -> Any:
    """Read one ``churn.*`` setting at call time."""
    return dask.config.get(f"churn.{key}", default=default)
