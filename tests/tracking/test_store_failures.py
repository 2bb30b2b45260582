"""A disk or tracking store that stops taking writes under a running job: the job's own error is
the one raised, in one line, and the run is marked FAILED wherever the store still takes the write."""

from __future__ import annotations

import logging

import mlflow
import pytest

from churn.tracking.run_log import parent_run
from churn.tracking.store import error_line
from tests.conftest import TELCO, job_spec


def test_a_full_disk_or_a_refusing_store_keeps_the_job_error(tmp_path, caplog):
    """(1) A write that finds no space (/dev/full) under the run: the run ends FAILED with the
    error. (2) The database turns unreadable mid-run (its header overwritten, as a broken disk
    looks to SQLite): the job's own error still comes out (not the refused FAILED mark), MLflow
    forgets the run (the next job can start), a warning says why it is left RUNNING, and the
    store's own error reads as one line. One store for both: creating one is the slow part."""
    job = job_spec(tmp_path, TELCO)
    uri, db = job.tracking.uri, tmp_path / "mlflow.db"
    with pytest.raises(OSError, match="No space left on device"):
        with parent_run(uri, job, None) as run, open("/dev/full", "wb") as full:
            full.write(b"rows")
            full.flush()
    ended = mlflow.MlflowClient(uri).get_run(run.info.run_id)
    assert ended.info.status == "FAILED"
    assert ended.data.tags["churn.error"] == "OSError: [Errno 28] No space left on device"

    with caplog.at_level(logging.WARNING, logger="churn.tracking.run_log"):
        with pytest.raises(RuntimeError, match="the job's own error"):
            with parent_run(uri, job, None) as run:
                header = db.read_bytes()[:100]
                with open(db, "r+b") as f:
                    f.write(b"\0" * 100)
                with pytest.raises(mlflow.exceptions.MlflowException) as refused:
                    mlflow.set_tag("churn.stage", "split")
                raise RuntimeError("the job's own error")
    assert mlflow.active_run() is None
    assert f"run {run.info.run_id} could not be marked FAILED: the tracking store refused the write" in caplog.text
    line = error_line(refused.value)
    assert "\n" not in line and "file is not a database" in line, refused.value.message
    with open(db, "r+b") as f:
        f.write(header)
    assert mlflow.MlflowClient(uri).get_run(run.info.run_id).info.status == "RUNNING"
