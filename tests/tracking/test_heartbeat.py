"""A driver killed without a word (SIGKILL) leaves no RUNNING run behind: its heartbeat stops, and
`churn status` or the next job in the experiment marks the run FAILED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.config
import mlflow

from churn.tracking.run_log import parent_run, run_status
from tests.conftest import ROOT, TELCO, job_spec

# A driver: opens the job's run (beating every 0.2 s), says which run, then waits to be killed.
DRIVER = """
import sys, time
import dask.config
from churn.tracking.run_log import parent_run
from tests.conftest import TELCO, job_spec
from pathlib import Path
job = job_spec(Path(sys.argv[1]), TELCO)
with dask.config.set({"churn.tracking.heartbeat-interval": "0.2s"}):
    with parent_run(sys.argv[2], job, None) as run:
        print(run.info.run_id, flush=True)
        time.sleep(600)
"""

TIMEOUT = {"churn.tracking.heartbeat-timeout": "1s"}


def _killed_driver(tmp_path: Path, store: str) -> str:
    """Start a driver, check that a 1 s timeout does not call it lost while it beats, SIGKILL it."""
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(tmp_path), store], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        run_id = proc.stdout.readline().strip()
        time.sleep(1.5)
        with dask.config.set(TIMEOUT):
            alive = run_status(store, run_id)
        assert alive.status == "RUNNING" and alive.heartbeat is not None and not alive.lost
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    time.sleep(1.5)
    return run_id


def test_status_marks_a_killed_driver_run_failed(tmp_path):
    """`churn status` of a run whose driver was SIGKILLed: FAILED, "driver lost", exit 1."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = _killed_driver(tmp_path, store)
    assert mlflow.MlflowClient(store).get_run(run_id).info.status == "RUNNING"  # nothing else wrote it
    out = subprocess.run([sys.executable, "-m", "churn.cli", "status", run_id, "--tracking-uri", store], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "DASK_CHURN__TRACKING__HEARTBEAT_TIMEOUT": "1s"})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED" in out.stdout and "driver lost" in out.stdout
    run = mlflow.MlflowClient(store).get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["churn.error"].startswith("driver lost: no heartbeat")


def test_next_job_marks_a_killed_driver_run_failed(tmp_path):
    """A new job in the same experiment marks the killed driver's run FAILED, and only that one."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lost = _killed_driver(tmp_path, store)
    with dask.config.set(TIMEOUT), parent_run(store, job_spec(tmp_path, TELCO), None) as run:
        assert run_status(store, lost).status == "FAILED"
        assert run_status(store, run.info.run_id).status == "RUNNING"
    assert run_status(store, run.info.run_id).status == "FINISHED"
