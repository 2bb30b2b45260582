"""Optional backends: a kind whose package is not installed is one message naming the pip command."""

from __future__ import annotations

import importlib
from types import ModuleType

from churn.clusters.errors import ClusterError


def require(module: str, extra: str, kind: str) -> ModuleType:
    """Import ``module``, or raise one ClusterError that names the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ClusterError(f"cluster kind {kind!r} needs the optional package {exc.name or module!r}: "
                           f"pip install 'churn[{extra}]'") from None
