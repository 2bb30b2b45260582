"""Where a job's run stands, and runs whose driver is gone.

MLflow leaves a run RUNNING when the process that opened it dies without a word (SIGKILL, a
lost machine), and a run created by ``churn submit`` whose driver task never starts. So:

* while a job runs, its driver tags the run with a heartbeat (:func:`heartbeat`), together with
  the interval it beats at;
* a RUNNING run whose heartbeat is older than ``max(tracking.heartbeat-timeout, 3 x its
  interval)`` lost its driver, and a run still at stage ``submitted`` after
  ``tracking.submit-timeout`` never got one (:func:`is_lost`);
* ``churn status`` of such a run, and the next job in its experiment, mark it FAILED
  (:func:`fail_if_lost`, :func:`fail_lost_runs`);
* a driver that finds its own run ended by someone else stops beating, and the job stops at its
  next stage (``run_log.set_stage``), before it registers a model into a FAILED run;
* a driver claims its run with a token of its own (:func:`claim_run`), and reads the run again
  just before it registers a model and just before it moves an alias (:func:`ownership_problem`):
  a run that was ended, taken over by another driver (a resubmitted driver task), or whose
  heartbeat is late enough for others to mark it lost (a driver paused past the timeout) stops
  there.

Comparing a heartbeat with the reader's clock assumes the hosts' clocks agree to well within
the timeout (NTP).

``churn status`` reads a local SQLite store with :mod:`sqlite3` (read-only, the tables MLflow
writes), so it answers without importing MLflow (seconds); other stores, and a schema it does not
know, are read through ``MlflowClient``.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from dask.utils import parse_timedelta

from churn.config import setting

STAGE_TAG = "churn.stage"
ERROR_TAG = "churn.error"
HEARTBEAT_TAG = "churn.heartbeat"  # epoch seconds of the driver's last beat
INTERVAL_TAG = "churn.heartbeat_interval"  # seconds between the driver's beats
SUBMITTED = "submitted"  # the stage of a run whose driver has not started
DRIVER_TAG = "churn.driver"  # the token of the driver that runs the job (the last to claim the run)

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import mlflow


class NoSuchRun(LookupError):
    """The store holds no run with that id."""


@dataclass(frozen=True)
class RunStatus:
    """What ``churn status`` shows: the run's MLflow state, the stage it is in, how it ended."""

    run_id: str
    name: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    stage: str | None
    error: str | None
    started: float | None  # epoch seconds
    ended: float | None
    metrics: dict[str, float]
    heartbeat: float | None = None  # epoch seconds of the driver's last beat; None before it started
    interval: float | None = None  # seconds between its beats
    tags: dict[str, str] = field(default_factory=dict)
    versions: list[str] = field(default_factory=list)  # "name/version" of the model versions the run registered

    @property
    def done(self) -> bool:
        return self.status in ("FINISHED", "FAILED", "KILLED")


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:  # a tag someone else wrote
        return None


def _status(run_id: str, name: str | None, status: str, start_ms: int | None, end_ms: int | None,
            tags: dict[str, str], metrics: dict[str, float], versions: list[str]) -> RunStatus:
    return RunStatus(run_id, name or "", status, tags.get(STAGE_TAG), tags.get(ERROR_TAG),
                     start_ms / 1000 if start_ms else None, end_ms / 1000 if end_ms else None, metrics,
                     _number(tags.get(HEARTBEAT_TAG)), _number(tags.get(INTERVAL_TAG)), tags, versions)


def status_of(run: mlflow.entities.Run, versions: list[str] | None = None) -> RunStatus:
    """A :class:`RunStatus` from MLflow's run record."""
    info, data = run.info, run.data
    return _status(info.run_id, info.run_name, info.status, info.start_time, info.end_time, dict(data.tags),
                   dict(data.metrics), versions or [])


def _sqlite_status(db: Path, run_id: str) -> RunStatus:
    """Run ``run_id`` read from MLflow's tables in ``db``, read-only (an sqlite3.Error when the
    tables are not as expected)."""
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
        row = con.execute("SELECT name, status, start_time, end_time FROM runs WHERE run_uuid = ?",
                          (run_id,)).fetchone()
        if row is None:
            raise NoSuchRun(run_id)
        tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
        metrics = {k: float("nan") if is_nan else float(v) for k, v, is_nan in con.execute(
            "SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", (run_id,))}
        versions = [f"{n}/{v}" for n, v in con.execute(
            "SELECT name, version FROM model_versions WHERE run_id = ? ORDER BY name, version", (run_id,))]
    return _status(run_id, *row, tags, metrics, versions)


def run_status(uri: str, run_id: str) -> RunStatus:
    """The state of run ``run_id`` in the store at ``uri`` (:class:`NoSuchRun` for an unknown id;
    other store failures are MlflowExceptions)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        try:
            return _sqlite_status(db, run_id)
        except sqlite3.Error as exc:  # a schema this reader does not know: MLflow's own
            log.debug("reading %s through MLflow: %s", db, exc)
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise NoSuchRun(run_id) from None
        raise
    try:
        versions = [f"{v.name}/{v.version}" for v in client.search_model_versions(f"run_id = '{run_id}'")]
    except MlflowException:  # a store without a registry
        versions = []
    return status_of(run, versions)


def fail_run(uri: str, run_id: str, message: str) -> None:
    """End run ``run_id`` FAILED with ``message`` in its ``churn.error`` tag (from outside the run)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    client.set_tag(run_id, ERROR_TAG, message[:500])
    client.set_terminated(run_id, "FAILED")


def is_lost(st: RunStatus, now: float, timeout: float, submit_timeout: float) -> str | None:
    """Why run ``st`` has no driver at time ``now``, or None while it may still have one."""
    if st.status != "RUNNING":
        return None
    if st.heartbeat is not None:
        limit = max(timeout, 3 * (st.interval or 0))
        if now - st.heartbeat > limit:
            return f"driver lost: no heartbeat since {_utc(st.heartbeat)}"
    elif st.stage == SUBMITTED and st.started is not None and now - st.started > submit_timeout:
        return f"driver never started: submitted at {_utc(st.started)}"
    return None


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def _timeouts() -> tuple[float, float]:
    return (parse_timedelta(setting("tracking.heartbeat-timeout")),
            parse_timedelta(setting("tracking.submit-timeout")))


def fail_if_lost(uri: str, st: RunStatus) -> RunStatus:
    """Mark run ``st`` FAILED if it has no driver (read again just before); its status after that.

    A store that refuses the write (read-only access) leaves the run as it is, with a warning.
    """
    timeouts = _timeouts()
    if is_lost(st, time.time(), *timeouts) is None:
        return st
    fresh = run_status(uri, st.run_id)
    reason = is_lost(fresh, time.time(), *timeouts)
    if reason is None:
        return fresh
    try:
        fail_run(uri, st.run_id, reason)
    except Exception as exc:  # noqa: BLE001 - reading must work without write access
        log.warning("run %s has no driver (%s) but could not be marked FAILED: %s", st.run_id, reason, exc)
        return fresh
    log.warning("run %s marked FAILED: %s", st.run_id, reason)
    return run_status(uri, st.run_id)


def fail_lost_runs(uri: str, experiment_id: str) -> None:
    """Mark every run of the experiment that has no driver FAILED; never fails the caller."""
    import mlflow

    try:
        running = mlflow.MlflowClient(uri).search_runs([experiment_id], "attributes.status = 'RUNNING'")
        for run in running:
            fail_if_lost(uri, status_of(run))
    except Exception as exc:  # noqa: BLE001 - bookkeeping for other runs must not stop this job
        log.warning("could not check experiment %s for runs without a driver: %s", experiment_id, exc)


def claim_run(uri: str, run_id: str) -> str:
    """Tag run ``run_id`` with a new driver token and return it: this driver now runs the job (a
    driver that claimed it before no longer does)."""
    import mlflow

    token = uuid.uuid4().hex
    mlflow.MlflowClient(uri).set_tag(run_id, DRIVER_TAG, token)
    return token


def ownership_problem(uri: str, run_id: str, token: str) -> str | None:
    """Why the driver holding ``token`` may no longer write into run ``run_id``, read from the store
    now; None while it may. A RUNNING run whose heartbeat is late enough for others to call it lost
    is marked FAILED here (what ``churn status`` would do a moment later)."""
    import mlflow

    run = mlflow.MlflowClient(uri).get_run(run_id)
    st = status_of(run)
    if st.status != "RUNNING":
        return f"run {run_id} was marked {st.status} while the job ran ({st.error or 'no reason given'})"
    if run.data.tags.get(DRIVER_TAG) != token:
        return f"run {run_id} was claimed by another driver while this one ran"
    reason = is_lost(st, time.time(), *_timeouts())
    if reason is not None:
        fail_run(uri, run_id, reason)
        return f"run {run_id} lost its driver ({reason}) and is marked FAILED"
    return None


@contextlib.contextmanager
def heartbeat(uri: str, run_id: str) -> Iterator[None]:
    """Tag run ``run_id`` with the time every ``tracking.heartbeat-interval`` while the block
    runs; stop beating if the run is found ended by someone else."""
    import mlflow

    interval = parse_timedelta(setting("tracking.heartbeat-interval"))
    client = mlflow.MlflowClient(uri)
    stop = threading.Event()
    client.set_tag(run_id, INTERVAL_TAG, f"{interval:g}")

    def beat() -> None:
        while True:
            try:
                if client.get_run(run_id).info.status != "RUNNING":
                    log.error("run %s was ended while its job ran; the job stops at its next stage", run_id)
                    return
                client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception as exc:  # noqa: BLE001 - a missed beat must not fail the job
                log.warning("heartbeat of run %s not written: %s", run_id, exc)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="churn-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)  # a daemon: a store that hangs cannot hold up the exit
