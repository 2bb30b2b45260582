"""A LocalCluster on this machine, from a ``kind: local`` cluster spec."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import dask.config
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster

from churn.clusters.errors import ClusterError, close_on_exit
from churn.clusters.security import security_for
from churn.clusters.tuning import nanny_config
from churn.config import LocalClusterSpec, setting


def _worker_config() -> dict[str, object]:
    """Worker settings that keep CPU-bound tasks fast: no sampling profiler stealing cycles from
    every task, and churn's worker environment (``clusters/tuning.py``) for the nannies to
    spawn each worker with."""
    return {"distributed.worker.profile.enabled": False, **nanny_config()}


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


def _options(spec: LocalClusterSpec) -> dict[str, object]:
    """LocalCluster's arguments. Workers in this process (``processes: false``) talk to the
    scheduler in memory (``inproc://``: no socket, no serialisation); distributed refuses a
    ``host`` with that transport, so the spec's host is not used (the dashboard binds where
    ``dashboard_address`` says)."""
    options: dict[str, object] = dict(host=spec.host, n_workers=spec.n_workers,
                                      threads_per_worker=spec.threads_per_worker, memory_limit=spec.memory_limit,
                                      processes=spec.processes, dashboard_address=spec.dashboard_address)
    if spec.tls is not None:
        options["protocol"] = "tls://"
    elif not spec.processes:
        del options["host"]
        options["protocol"] = "inproc://"
    return options


def in_process(spec: LocalClusterSpec) -> LocalClusterSpec:
    """``spec``'s cluster with its workers' threads in this process: one worker of all the spec's
    threads and one worker's memory limit (``processes: false``; see :func:`_options`)."""
    return spec.model_copy(update={"processes": False, "n_workers": 1,
                                   "threads_per_worker": spec.n_workers * spec.threads_per_worker})


def start(spec: LocalClusterSpec) -> LocalCluster:
    """Start the LocalCluster ``spec`` describes; any startup failure is one ClusterError."""
    timeout = parse_timedelta(setting("cluster.local-startup-timeout"))
    try:
        with dask.config.set(_worker_config()), _children_ignore_sigint():
            return LocalCluster(**_options(spec), security=security_for(spec.tls), timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - report any startup failure in one line
        raise ClusterError(f"cannot start LocalCluster on {spec.host}: {exc}") from exc


def open_client(spec: LocalClusterSpec, stack: contextlib.ExitStack) -> Client:
    """A client on a new LocalCluster; ``stack`` closes both."""
    cluster = close_on_exit(stack, start(spec))
    return close_on_exit(stack, Client(cluster, security=security_for(spec.tls), set_as_default=False))


def render(spec: LocalClusterSpec) -> str:
    """The LocalCluster call this spec makes."""
    args = ", ".join(f"{k}={v!r}" for k, v in _options(spec).items())
    tls = f"\nTLS: CA {spec.tls.ca_file}, certificate {spec.tls.cert}" if spec.tls else ""
    return f"distributed.LocalCluster({args}){tls}\n"
