"""dask-jobqueue's SLURMCluster from a ``kind: slurm`` spec (``churn[slurm]``): the scheduler runs
in this process, each worker group is one ``sbatch`` job."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from distributed import Client

from churn.clusters.collective import tracker_note
from churn.clusters.errors import ClusterError, close_on_exit, wait_for_first_worker
from churn.clusters.extras import require
from churn.clusters.security import security_for
from churn.clusters.tuning import worker_environ
from churn.config import SlurmSpec


def _job_options(spec: SlurmSpec) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        cores=spec.cores, memory=spec.memory, processes=spec.processes, queue=spec.queue, account=spec.account,
        walltime=spec.walltime, python=spec.python or sys.executable, interface=spec.interface,
        job_extra_directives=spec.job_extra_directives,
        job_script_prologue=[*(f"export {k}={v}" for k, v in worker_environ().items()), *spec.job_script_prologue],
        local_directory=spec.local_directory, log_directory=spec.log_directory, name="churn-worker",
        job_name="churn-worker")
    if spec.tls is not None:  # the workers listen on tls:// and take the files on their command line
        options.update(protocol="tls://", security=security_for(spec.tls))
    return {k: v for k, v in options.items() if v is not None}


def open_client(spec: SlurmSpec, stack: contextlib.ExitStack) -> Client:
    """Start the scheduler, submit ``spec.jobs`` worker jobs and wait for the first worker."""
    jobqueue = require("dask_jobqueue", "slurm", "slurm")
    try:
        cluster = jobqueue.SLURMCluster(**_job_options(spec),  # protocol and security: the scheduler's too
                                        scheduler_options={"dashboard_address": spec.dashboard_address})
    except Exception as exc:  # noqa: BLE001 - e.g. no sbatch on this machine
        raise ClusterError(f"cannot start SLURMCluster: {exc}") from exc
    close_on_exit(stack, cluster)  # closing it cancels the jobs (scancel)
    cluster.scale(jobs=spec.jobs)
    client = close_on_exit(stack, Client(cluster, security=security_for(spec.tls), set_as_default=False))
    wait_for_first_worker(client, "SLURM worker job", "squeue shows why")
    return client


def render(spec: SlurmSpec) -> str:
    """The sbatch script of one worker job, as dask-jobqueue writes it (scheduler address filled
    in at launch; ``--nthreads``: cores / processes, XGBoost's nthread on each worker), how many
    are submitted, and where an ``xgboost.dask`` fit's tracker listens."""
    require("dask_jobqueue.slurm", "slurm", "slurm")  # before the import: a clear message when missing
    from dask_jobqueue.slurm import SLURMJob
    scheme = "tls" if spec.tls else "tcp"
    script = SLURMJob(scheduler=f"{scheme}://SCHEDULER:8786", **_job_options(spec)).job_script()
    return (f"# sbatch x {spec.jobs} (SCHEDULER: this host, known once the scheduler starts)\n"
            f"# {tracker_note(spec.xgboost, 'this host')}\n{script}")
