"""The serve job: pin the model URI to one version, copy it here, serve it with uvicorn.

The HTTP app is :mod:`churn.serving.server` (MLflow's scoring app in churn's middleware). The
model is resolved once (an alias becomes the version it points at now, so every worker serves
the same one and says which), copied to a local folder, and loaded once here before any
worker starts, so a model that does not exist or does not load is one line, not a server.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from dask.utils import parse_bytes

from churn.config import ConfigError, setting
from churn.serving import server
from churn.tracking.store import TrackingError, check_readable
from churn.tracking.verify import ArtifactMismatchError, verified_model

WORKER_START_TIMEOUT = 120  # seconds a worker process may take to answer uvicorn's first health check


class ServeError(RuntimeError):
    """The model was found but cannot be served (e.g. it does not load)."""


@dataclass
class ServedModel:
    """The model `churn serve` serves: the URI as given, the version it resolved to, its local copy."""

    uri: str
    version: str  # the registered version (only registered versions, whose digests are checked, are served)
    path: str


def resolve(model_uri: str, tracking_uri: str, into: Path) -> ServedModel:
    """``model_uri`` pinned to one version and copied into ``into``; :class:`ConfigError` naming
    the URI and the store when there is no such model (creating nothing)."""
    missing = f"no model {model_uri} in the tracking store {tracking_uri}"
    if not tracking_uri.startswith(("http://", "https://")):  # the caller checked a server is reachable
        try:  # a local store that is not there, or not MLflow's, is not created (or given MLflow's tables)
            check_readable(tracking_uri)
        except ConfigError as exc:
            raise ConfigError(f"{missing}: {exc} (train a model first, or pass --tracking-uri)") from None
    mlflow.set_tracking_uri(tracking_uri)
    try:
        # the registry's digests checked before any of the model's code can run (churn.tracking.verify)
        checked = verified_model(model_uri, into)
    except ArtifactMismatchError:
        raise
    except (ConfigError, TrackingError) as exc:
        raise ConfigError(f"{missing}: {str(exc).removeprefix('model_uri: ')}") from None
    return ServedModel(model_uri, checked.version, str(checked.path))


def max_body() -> int:
    """The request body cap in bytes (``churn.serve.max-body``); a ConfigError naming the setting
    when it is not a byte size of at least one byte."""
    raw = setting("serve.max-body")
    try:
        cap = int(parse_bytes(raw))
    except (TypeError, ValueError):
        cap = 0
    if isinstance(raw, bool) or cap < 1:
        raise ConfigError(f"churn.serve.max-body={str(raw)[:40]!r} is not a byte size such as 1MiB")
    return cap


def load(model: ServedModel) -> server.Bounded:
    """The HTTP app for ``model``, loaded here once; :class:`ServeError` when it does not load."""
    cap = max_body()  # a bad setting is named as such, not taken for a model that does not load
    try:
        return server.build_app(model.path, model.version, cap)
    except Exception as exc:  # noqa: BLE001 - any load failure is one line naming the model
        raise ServeError(f"cannot load {model.uri} (version {model.version}): {exc}") from None


def exposure_warning(host: str, tls: bool) -> str | None:
    """A warning when ``host`` binds beyond loopback without TLS, else None."""
    if tls or host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a host name: it may resolve to any interface
        pass
    return (f"serving on {host} without TLS: anyone on that network can read the rows and scores; "
            "pass --ssl-certfile and --ssl-keyfile, or bind 127.0.0.1 behind a TLS proxy")


def run(app: server.Bounded, model: ServedModel, host: str, port: int, workers: int,
        ssl: dict[str, Any]) -> None:
    """Serve until interrupted: ``app`` itself with one worker; with several, each uvicorn worker
    process builds it again from the local copy (:func:`churn.serving.server.app_from_env`)."""
    import uvicorn

    options = {"host": host, "port": port, **ssl}
    if workers == 1:
        uvicorn.run(app, **options)
        return
    os.environ.update({server.MODEL_DIR_ENV: model.path, server.VERSION_ENV: model.version,
                       server.MAX_BODY_ENV: str(app.max_body)})
    # a worker process answers uvicorn's health check only once it has started Python and imported
    # churn (seconds on a busy host; uvicorn's default of 5 s kills and restarts it forever)
    uvicorn.run("churn.serving.server:app_from_env", factory=True, workers=workers,
                timeout_worker_healthcheck=WORKER_START_TIMEOUT, **options)
