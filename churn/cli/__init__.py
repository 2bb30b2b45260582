"""The ``churn`` command (Typer): ``train``, ``ingest``, ``generate``, ``schema infer``, ...

``app`` and ``main`` are loaded on first use, so a worker that unpickles the CLI's worker plugin
(:mod:`churn.cli.workers`) does not import the command line with it.
"""

import importlib
from typing import Any

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module("churn.cli.app")
        value = globals()[name] = getattr(module, name)  # the Typer app, not the submodule of that name
        return value
    raise AttributeError(f"module 'churn.cli' has no attribute {name!r}")
