"""Local paths made absolute on the client, before a spec reaches any worker.

A Dask worker resolves a relative path in its own working directory, which is not the client's:
``churn train|ingest|score|monitor --scheduler`` and ``churn submit`` send every worker the
absolute form (the files must then be on a file system the workers see at the same path).
URLs (``s3://…``, ``http://…``) are left as they are.
"""

from __future__ import annotations

import os
from typing import TypeVar

from pydantic import BaseModel

SpecT = TypeVar("SpecT", bound=BaseModel)


def absolute(path: str) -> str:
    """``path`` made absolute in the current folder (``~`` expanded); a URL, or ``file://`` with an
    absolute path, as it is."""
    if path.startswith("file://"):
        rest = path.removeprefix("file://")
        return path if rest.startswith("/") else "file://" + os.path.abspath(os.path.expanduser(rest))
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def absolute_uri(uri: str) -> str:
    """A tracking URI with a relative SQLite file or local folder made absolute; others as they are."""
    if uri.startswith("sqlite:///") and not uri.removeprefix("sqlite:///").startswith("/"):
        return "sqlite:///" + os.path.abspath(uri.removeprefix("sqlite:///"))
    return absolute(uri) if uri.startswith("file://") or "://" not in uri else uri


def with_absolute_paths(spec: SpecT) -> SpecT:
    """``spec`` (a train, score or monitor job) with ``data.source``, ``data.output``, a monitor's
    ``report`` and a tracking URI set in the spec made absolute."""
    update: dict[str, object] = {}
    data = getattr(spec, "data", None)
    if data is not None:
        update["data"] = data.model_copy(update={"source": absolute(data.source), "output": absolute(data.output)})
    if isinstance(getattr(spec, "report", None), str):
        update["report"] = absolute(spec.report)  # type: ignore[attr-defined]
    tracking = getattr(spec, "tracking", None)
    if tracking is not None and tracking.uri:
        update["tracking"] = tracking.model_copy(update={"uri": absolute_uri(tracking.uri)})
    return spec.model_copy(update=update)
