"""Runs whose driver is gone do not stay RUNNING: a driver killed without a word (SIGKILL) stops its
heartbeat, and `churn status` or the next job in the experiment marks its run FAILED; a driver
whose run was ended by someone else stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dask.config
import mlflow
import pytest

from churn.tracking.run_log import create_run, parent_run
from churn.tracking.run_state import RunStatus, fail_run, is_lost, run_status
from tests.conftest import ROOT, TELCO, job_spec

# A driver: opens the job's run (beating every argv[3] seconds), says which run, then goes from
# stage to stage every 0.2 s.
DRIVER = """
import sys, time
import dask.config
from churn.tracking.run_log import parent_run, set_stage
from tests.conftest import TELCO, job_spec
from pathlib import Path
job = job_spec(Path(sys.argv[1]), TELCO)
with dask.config.set({"churn.tracking.heartbeat-interval": sys.argv[3] + "s"}):
    with parent_run(sys.argv[2], job, None) as run:
        print(run.info.run_id, flush=True)
        for i in range(3000):
            set_stage(f"stage {i}")
            time.sleep(0.2)
"""

TIMEOUT = {"churn.tracking.heartbeat-timeout": "1s"}


def _until(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds}s: {what}")
        time.sleep(0.1)


def _driver(tmp_path: Path, store: str, interval: float = 0.2) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path), store, str(interval)],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    run_id = proc.stdout.readline().strip()  # '' if the driver died first
    assert run_id, "the driver did not open its run"
    _until(lambda: run_status(store, run_id).heartbeat is not None, "first heartbeat")
    return proc, run_id


def _killed_driver(tmp_path: Path, store: str) -> str:
    """A driver that beat (and was not called lost while it did), then was SIGKILLed."""
    proc, run_id = _driver(tmp_path, store)
    try:
        time.sleep(1.5)  # longer than the 1 s timeout: only the beats keep it alive
        with dask.config.set(TIMEOUT):
            assert not is_lost(run_status(store, run_id), time.time(), 1.0, 3600.0)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    last = run_status(store, run_id).heartbeat
    _until(lambda: time.time() - last > 1.2, "heartbeat older than the timeout")
    return run_id


@pytest.mark.cluster
def test_status_marks_a_killed_driver_run_failed(forked_churn, tmp_path):
    """`churn status` of a run whose driver was SIGKILLed: FAILED, "driver lost", exit 1."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _killed_driver(tmp_path, store)
    assert mlflow.MlflowClient(store).get_run(run_id).info.status == "RUNNING"  # nothing else wrote it
    out = forked_churn.run("status", run_id, "--tracking-uri", store, cwd=ROOT, timeout=120,
                           env={**os.environ, "DASK_CHURN__TRACKING__HEARTBEAT_TIMEOUT": "1s"})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout and "driver lost" in out.stdout
    run = mlflow.MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["churn.error"].startswith("driver lost: no heartbeat")


@pytest.mark.cluster
def test_next_job_marks_only_runs_without_a_driver_failed(tmp_path):
    """A new job in the experiment marks the killed driver's run and a submitted run that never
    started FAILED; a run of another tool (no heartbeat) and a fresh submitted run stay RUNNING."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = job_spec(tmp_path, TELCO)
    lost = _killed_driver(tmp_path, store)
    stale = create_run(store, job, None)
    mlflow.set_tracking_uri(store)
    other = mlflow.MlflowClient(store).create_run(
        mlflow.get_experiment_by_name(job.tracking.experiment).experiment_id).info.run_id
    time.sleep(1.2)
    fresh = create_run(store, job, None)
    with dask.config.set({**TIMEOUT, "churn.tracking.submit-timeout": "1s"}), parent_run(store, job, None) as run:
        assert run_status(store, lost).status == "FAILED"
        assert run_status(store, stale).error.startswith("driver never started: submitted at")
        assert run_status(store, other).status == run_status(store, fresh).status == "RUNNING"
        assert run_status(store, run.info.run_id).status == "RUNNING"
    assert run_status(store, run.info.run_id).status == "FINISHED"


@pytest.mark.cluster
def test_a_driver_whose_run_was_ended_stops(tmp_path):
    """Marked FAILED from outside (say, by a status call that thought it lost), a live driver
    stops at its next stage instead of going on into a FAILED run; the run stays FAILED and
    says why."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc, run_id = _driver(tmp_path, store)
    try:
        fail_run(store, run_id, "driver lost: a test")
        assert proc.wait(30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    st = run_status(store, run_id)
    assert st.status == "FAILED" and st.error.startswith("RunEndedError: ") and "driver lost: a test" in st.error


BEAT = 1_000_000.0


@pytest.mark.parametrize("st, now, lost", [
    (RunStatus("r", "", "RUNNING", "search", None, BEAT - 60, None, {}, BEAT, 30.0), BEAT + 179, False),
    (RunStatus("r", "", "RUNNING", "search", None, BEAT - 60, None, {}, BEAT, 30.0), BEAT + 181, True),
    (RunStatus("r", "", "RUNNING", "search", None, BEAT - 60, None, {}, BEAT, 120.0), BEAT + 300, False),
    (RunStatus("r", "", "FINISHED", "done", None, BEAT - 60, BEAT, {}, BEAT, 30.0), BEAT + 999, False),
    (RunStatus("r", "", "RUNNING", None, None, BEAT - 9999, None, {}), BEAT, False),
    (RunStatus("r", "", "RUNNING", "submitted", None, BEAT, None, {}), BEAT + 3599, False),
    (RunStatus("r", "", "RUNNING", "submitted", None, BEAT, None, {}), BEAT + 3601, True),
], ids=["beating", "silent", "slow-beats", "finished", "no-heartbeat", "queued", "never-started"])
def test_is_lost(st, now, lost):
    """Lost: silent past max(timeout, 3 beats), or submitted and never started; nothing else."""
    assert (is_lost(st, now, timeout=180.0, submit_timeout=3600.0) is not None) is lost
