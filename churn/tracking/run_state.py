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
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import mlflow
from dask.utils import parse_timedelta

from churn.config import setting

STAGE_TAG = "churn.stage"
ERROR_TAG = "churn.error"
HEARTBEAT_TAG = "churn.heartbeat"  # epoch seconds of the driver's last beat
INTERVAL_TAG = "churn.heartbeat_interval"  # seconds between the driver's beats
SUBMITTED = "submitted"  # the stage of a run whose driver has not started
DRIVER_TAG = "churn.driver"  # the token of the driver that runs the job (the last to claim the run)

log = logging.getLogger(__name__)


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

    @property
    def done(self) -> bool:
        return self.status in ("FINISHED", "FAILED", "KILLED")


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:  # a tag someone else wrote
        return None


def status_of(run: mlflow.entities.Run) -> RunStatus:
    """A :class:`RunStatus` from MLflow's run record."""
    info, data = run.info, run.data
    return RunStatus(info.run_id, info.run_name or "", info.status, data.tags.get(STAGE_TAG),
                     data.tags.get(ERROR_TAG), info.start_time / 1000 if info.start_time else None,
                     info.end_time / 1000 if info.end_time else None, dict(data.metrics),
                     _number(data.tags.get(HEARTBEAT_TAG)), _number(data.tags.get(INTERVAL_TAG)))


def run_status(uri: str, run_id: str) -> RunStatus:
    """The state of run ``run_id`` in the store at ``uri`` (an unknown id is an MlflowException)."""
    return status_of(mlflow.MlflowClient(uri).get_run(run_id))


def fail_run(uri: str, run_id: str, message: str) -> None:
    """End run ``run_id`` FAILED with ``message`` in its ``churn.error`` tag (from outside the run)."""
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
    try:
        running = mlflow.MlflowClient(uri).search_runs([experiment_id], "attributes.status = 'RUNNING'")
        for run in running:
            fail_if_lost(uri, status_of(run))
    except Exception as exc:  # noqa: BLE001 - bookkeeping for other runs must not stop this job
        log.warning("could not check experiment %s for runs without a driver: %s", experiment_id, exc)


def claim_run(uri: str, run_id: str) -> str:
    """Tag run ``run_id`` with a new driver token and return it: this driver now runs the job (a
    driver that claimed it before no longer does)."""
    token = uuid.uuid4().hex
    mlflow.MlflowClient(uri).set_tag(run_id, DRIVER_TAG, token)
    return token


def ownership_problem(uri: str, run_id: str, token: str) -> str | None:
    """Why the driver holding ``token`` may no longer write into run ``run_id``, read from the store
    now; None while it may. A RUNNING run whose heartbeat is late enough for others to call it lost
    is marked FAILED here (what ``churn status`` would do a moment later)."""
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
