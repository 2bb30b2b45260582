"""Detached jobs: ``churn submit`` runs a train job's driver as a task on the cluster itself, so the
job goes on after the submitting process exits. Wiring only.

The driver task secedes from its worker's thread pool (``worker_client``), so it does not hold a
slot that the job's own tasks need: a one-thread worker runs both.
"""

from __future__ import annotations

import contextlib
import logging
import time

from distributed import Client, Future, fire_and_forget, worker_client

from churn.clusters import ClusterError
from churn.config import JobSpec
from churn.config.paths import absolute_uri, with_absolute_paths
from churn.jobs import train
from churn.tracking.run_log import create_run
from churn.tracking.run_state import SUBMITTED, fail_run, run_status
from churn.tracking.store import resolve_uri

log = logging.getLogger(__name__)


def portable(job: JobSpec) -> JobSpec:
    """The job with its local paths and tracking URI made absolute: the driver runs in a worker,
    whose working directory is not this one (the files must be on a filesystem both can see)."""
    job = with_absolute_paths(job)
    tracking = job.tracking.model_copy(update={"uri": absolute_uri(resolve_uri(job.tracking))})
    return job.model_copy(update={"tracking": tracking})


def _first_line(exc: BaseException) -> str:
    first = next((line for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {first}"


def drive(job: JobSpec, run_id: str) -> str:
    """The job's driver, as a task: runs the train job into run ``run_id``; returns the model URI.

    Whatever stops it ends the run FAILED with the reason (also a failure before the run is
    open). Run again by the scheduler after its worker died, it continues the job in the same run
    (the search restores the fits its checkpoints kept, :mod:`churn.modeling.search_cache`) unless
    the job had reached the stage that registers the model: then it ends the run FAILED, to be
    submitted again, rather than register a second version from one run.
    """
    uri = job.tracking.uri or ""
    try:
        st = run_status(uri, run_id)
        if st.done:  # marked FAILED while it waited (no driver within tracking.submit-timeout): keep it so
            return ""
        if st.stage in ("track", "done"):
            fail_run(uri, run_id, f"the job's driver was lost with its worker at stage {st.stage}; submit it again")
            return ""
        if st.stage != SUBMITTED:
            log.warning("run %s: the job's driver was lost with its worker at stage %s; continuing the run",
                        run_id, st.stage)
        with worker_client() as client:  # secede: the job's tasks get this worker's thread
            return train.run(job, client, run_id=run_id).model_uri
    except BaseException as exc:
        fail_run(uri, run_id, _first_line(exc))
        raise


def submit(job: JobSpec, client: Client, job_file: str | None = None, timeout: float = 30.0) -> str:
    """Create the job's MLflow run, hand its driver to the scheduler and return the run id once the
    scheduler holds the task (it then runs whether or not this process is still there)."""
    job = portable(job)
    uri = job.tracking.uri or ""
    run_id = create_run(uri, job, job_file)
    key = f"churn-driver-{run_id}"
    try:
        fire_and_forget(client.submit(drive, job, run_id, key=key, pure=False))
        deadline = time.monotonic() + timeout
        while not client.run_on_scheduler(lambda dask_scheduler: key in dask_scheduler.tasks):
            if time.monotonic() > deadline:
                raise ClusterError(f"the scheduler did not take the driver task {key} within {timeout:g}s")
            time.sleep(0.1)
    except BaseException as exc:
        fail_run(uri, run_id, f"not submitted: {_first_line(exc)}")
        with contextlib.suppress(Exception):  # the scheduler may be gone
            client.cancel([Future(key, client)], force=True)
        raise
    log.info("submitted %s as run %s to %s", job.name, run_id, client.scheduler.address)
    return run_id
