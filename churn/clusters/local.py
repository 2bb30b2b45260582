"""A LocalCluster on this machine, from a ``kind: local`` cluster spec."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import dask.config
from dask.utils import parse_timedelta
from distributed import LocalCluster

from churn.clusters.errors import ClusterError
from churn.config import ClusterSpec, setting

# Worker settings that keep CPU-bound fits fast: no sampling profiler stealing cycles
# from every task.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


@contextlib.contextmanager
def _children_ignore_sigint() -> Iterator[None]:
    """Worker processes started in this block ignore SIGINT (inherited through spawn).

    Ctrl-C in a terminal reaches the whole process group; the driver alone should handle it
    (closing the cluster in order), not every worker dying with its own traceback.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start(spec: ClusterSpec) -> LocalCluster:
    """Start the LocalCluster ``spec`` describes; any startup failure is one ClusterError."""
    timeout = parse_timedelta(setting("cluster.local-startup-timeout"))
    try:
        with dask.config.set(WORKER_CONFIG), _children_ignore_sigint():
            return LocalCluster(
                host=spec.host,
                n_workers=spec.n_workers,
                threads_per_worker=spec.threads_per_worker,
                memory_limit=spec.memory_limit,
                processes=spec.processes,
                dashboard_address=spec.dashboard_address,  # None: no dashboard
                timeout=timeout,
            )
    except Exception as exc:  # noqa: BLE001 - report any startup failure in one line
        raise ClusterError(f"cannot start LocalCluster on {spec.host}: {exc}") from exc
