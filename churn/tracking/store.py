"""The MLflow tracking store: which one, whether it can be used, and the experiment.

With no tracking URI configured (job spec or ``MLFLOW_TRACKING_URI``), runs go to an
embedded store in the current directory: a SQLite file plus a local artifact folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path

from dask.utils import parse_timedelta

from churn.config import ConfigError, TrackingSpec, setting
from churn.config.job import has_credentials
from churn.data.folders import unwritable_reason

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """The tracking store cannot be used."""


# setting -> MLflow's environment variable (mlflow/environment_variables.py, read at each request),
# with the range MLflow accepts (its _MLFLOW_HTTP_REQUEST_MAX_*_LIMIT caps)
REQUEST_LIMITS = {"request-timeout": ("MLFLOW_HTTP_REQUEST_TIMEOUT", 1, 3600),
                  "max-retries": ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 0, 10),
                  "backoff-factor": ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 0, 120)}


def request_limits() -> dict[str, int]:
    """MLflow's HTTP limits from the ``churn.tracking`` settings, as its environment variables take
    them (whole numbers; the timeout in seconds). A stalled server fails one call after at most
    ``(max-retries + 1) x request-timeout`` plus the waits between the retries (urllib3's: 0,
    then 2, 4, ... x backoff-factor seconds, plus up to 1 s of MLflow's jitter each)."""
    values = {"request-timeout": setting("tracking.request-timeout"), "max-retries": setting("tracking.max-retries"),
              "backoff-factor": setting("tracking.backoff-factor")}
    out = {}
    for key, (env, low, high) in REQUEST_LIMITS.items():
        value = values[key]
        try:
            number = parse_timedelta(value) if key == "request-timeout" else value
        except (TypeError, ValueError, KeyError):  # KeyError: dask's "invalid time unit"
            number = None
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not low <= number <= high:
            raise ConfigError(f"churn.tracking.{key}={value!r}: expected a whole number of "
                              f"{'seconds ' if key == 'request-timeout' else ''}from {low} to {high}")
        out[env] = round(number)
    return out


def limit_requests() -> None:
    """Bound every MLflow HTTP request of this process by the settings (:func:`request_limits`):
    MLflow's defaults (120 s, 7 retries, backoff 2) hold a job and its cluster for about 20
    minutes per call to a server that answers ``/health`` but stalls on its API."""
    os.environ.update({env: str(value) for env, value in request_limits().items()})


def resolve_uri(spec: TrackingSpec) -> str:
    """Job spec URI, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the current directory.

    Every command finds its store here first, so MLflow's HTTP requests are bounded here too
    (:func:`limit_requests`)."""
    limit_requests()
    if spec.uri:
        return spec.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        uri = os.environ["MLFLOW_TRACKING_URI"]
        if has_credentials(uri):  # it would be logged with the job and shown in messages
            raise ConfigError("MLFLOW_TRACKING_URI holds credentials: remove them and set MLFLOW_TRACKING_USERNAME "
                              "and MLFLOW_TRACKING_PASSWORD instead")
        return uri
    return "sqlite:///" + str(Path(setting("tracking.default-store")).resolve())


def check_store(uri: str) -> None:
    """Fail fast, naming the URI, when the store cannot be used: a tracking server that does
    not answer, or a local database or artifact folder that cannot be written."""
    if uri.startswith(("http://", "https://")):
        check_reachable(uri)
        return
    folders = []
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        folders = [db.parent, artifact_root(uri)]
    elif uri.startswith("file:") or "://" not in uri:
        folders = [Path(uri.removeprefix("file://")).resolve()]
    for folder in folders:
        reason = unwritable_reason(folder)
        if reason:
            raise TrackingError(f"tracking store {uri}: cannot write to {folder}: {reason}")


def check_readable(uri: str) -> None:
    """For commands that only read (``churn status``): the store at ``uri`` must exist already, so
    that MLflow does not create one (folders, a database) where none was; a local file must be an
    MLflow SQLite database. A missing or foreign store is a ConfigError naming it, a server that
    does not answer a TrackingError."""
    if uri.startswith(("http://", "https://")):
        check_reachable(uri)
        return
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        if not db.is_file():
            raise ConfigError(f"no tracking store at {db}: there is no such file (nothing was created)")
        reason = _not_mlflow_sqlite(db)
        if reason:
            raise ConfigError(f"{db} is not an MLflow tracking store: {reason}")
    elif uri.startswith("file:") or "://" not in uri:
        folder = Path(uri.removeprefix("file://")).resolve()
        if not folder.is_dir():
            raise ConfigError(f"no tracking store at {folder}: there is no such folder (nothing was created)")


def _not_mlflow_sqlite(db: Path) -> str | None:
    """Why ``db`` is not an MLflow SQLite store (None when it is), read without writing: MLflow
    would otherwise create its tables in any SQLite file, and fails with a raw traceback on others."""
    with open(db, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":  # the header every SQLite 3 database starts with
            return "not an SQLite database"
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        return f"cannot read it as SQLite: {exc}"
    return None if {"runs", "experiments"} <= tables else "an SQLite database without MLflow's tables"


def check_reachable(uri: str, timeout: float | None = None) -> None:
    """Fail fast, with the URI in the message, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    timeout = parse_timedelta(setting("tracking.reachable-timeout")) if timeout is None else timeout
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured URI
            if resp.status != 200:
                raise TrackingError(f"MLflow tracking server at {uri} answered {resp.status} on /health")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise TrackingError(f"cannot reach MLflow tracking server at {uri}: {exc}") from None
    check_credentials(uri, timeout)


def check_credentials(uri: str, timeout: float) -> None:
    """Fail fast when the server wants credentials it did not get or refuses.

    ``/health`` answers everyone, so one read-only API call is made with the credentials MLflow
    itself takes from the environment (``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``
    or ``MLFLOW_TRACKING_TOKEN``, through MLflow's own request helper). The message names the
    user, never the password.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    creds = get_default_host_creds(uri)
    try:
        resp = http_request(creds, "/api/2.0/mlflow/experiments/search", "GET", max_retries=0, timeout=timeout,
                            raise_on_status=False, params={"max_results": 1})
    except MlflowException as exc:  # connection refused or timed out after /health
        raise TrackingError(f"MLflow tracking server at {uri} did not answer an API request: {exc.message}") from None
    if resp.status_code in (401, 403):
        who = (f"user {creds.username!r}" if creds.username else "a token" if creds.token
               else "no credentials (set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD)")
        raise TrackingError(f"MLflow tracking server at {uri} refused {who}: HTTP {resp.status_code}")


# the experiment tag the MLflow 3 UI reads to pick its views: model training, not GenAI traces
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def ensure_experiment(uri: str, name: str) -> str:
    """Point mlflow at ``uri`` and return the experiment id, creating it when needed, tagged as a
    model-training experiment (:data:`EXPERIMENT_KIND_TAG`; a kind someone set is kept)."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in exp.tags:  # made before churn set it
            mlflow.MlflowClient().set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = artifact_root(uri)
    return mlflow.create_experiment(name, artifact_location=location.as_uri() if location else None,
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def artifact_root(uri: str) -> Path | None:
    """For a SQLite store: the artifact folder beside the database file; else None."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()  # sqlite:////abs and sqlite:///rel alike
    return db.parent / setting("tracking.default-artifacts")


def mlflow_executable() -> str:
    """The absolute path of the ``mlflow`` command installed beside this Python (else on PATH)."""
    beside = Path(sys.executable).parent / "mlflow"
    if beside.is_file():
        return str(beside.absolute())  # absolute, not resolved: a venv's python is a symlink
    found = shutil.which("mlflow")
    return str(Path(found).absolute()) if found else "mlflow"


def ui_hint(uri: str) -> str:
    """The command that opens the MLflow UI on this store, pasted in any folder: the executable
    and a SQLite store's path are absolute."""
    if uri.startswith("http"):
        return f"open {uri} in a browser"
    root = artifact_root(uri)
    if root is None:
        if "://" not in uri or uri.startswith("file:"):
            uri = Path(uri.removeprefix("file://")).resolve().as_uri()
        return f"{mlflow_executable()} ui --backend-store-uri {uri}"
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (f"{mlflow_executable()} ui --backend-store-uri sqlite:///{db} --default-artifact-root {root} "
            "--host 127.0.0.1 --port 5000")


def error_line(exc: BaseException) -> str:
    """The line of a tracking error that says what went wrong: MLflow passes SQLAlchemy's
    messages on whole (the SQL, its parameters, a link), led at times by a note on autoflush."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # not imported: exc is none of MLflow's
    text = exc.message if mlflow_exceptions and isinstance(exc, mlflow_exceptions.MlflowException) else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("(raised as a result of")]
    return (useful or lines or [""])[0]
