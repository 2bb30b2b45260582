"""What an ``xgboost.dask`` fit needs from the cluster spec: its collective's tracker, and threads.

XGBoost's collective (Rabit) needs a tracker besides Dask's scheduler: ``xgboost.dask`` starts it
on the scheduler's host at each fit, and every worker connects to it. On SLURM and Kubernetes the
network between the nodes may be filtered, so the spec's ``xgboost`` section
(:class:`churn.config.cluster.XGBoostSpec`) says where it listens; :func:`xgboost_collective`
turns it into the arguments of ``xgboost.collective.Config`` (this module imports no xgboost).
XGBoost drops a port given without a host, so a host is always given with it.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from distributed import Client
from distributed.comm import get_address_host

from churn.clusters.errors import ClusterError
from churn.config import ClusterSpec, KubernetesSpec, SlurmSpec, XGBoostSpec
from churn.config.cluster import port_range


def _scheduler_host(dask_scheduler: Any) -> str:
    """On the scheduler: the host of its own address (the one its workers connect to)."""
    return get_address_host(dask_scheduler.address).strip("[]")


def _free_port(host: str, low: int, high: int) -> int | None:
    """On the scheduler: the first port in low..high that ``host`` can listen on now; None if none."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for port in range(low, high + 1):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                raise
            return port
    return None


def xgboost_collective(spec: ClusterSpec | None, client: Client) -> dict[str, Any] | None:
    """Keyword arguments of ``xgboost.collective.Config`` for an ``xgboost.dask`` fit on ``client``,
    the cluster ``spec`` started (the train job passes them to the full-data fit,
    :func:`churn.modeling.full_data.collective_config`); None: the kind has
    no ``xgboost`` section (local, address, ssh), so XGBoost's own defaults apply.

    For ``slurm`` and ``kubernetes``: ``tracker_host_ip`` is the spec's ``xgboost.tracker_host``, or
    else the host of the scheduler's own address, asked from the scheduler (on a Kubernetes pod its
    pod IP, which the worker pods reach; the driver's view of it may be a port-forward or a Service's
    ClusterIP, where nothing can listen). ``tracker_port`` is the spec's port, 0 (the OS picks one),
    or the first free port of its range on the scheduler's host (a :class:`ClusterError` when the
    whole range is taken). ``timeout`` (seconds per collective operation) when the spec sets one.
    """
    if not isinstance(spec, (SlurmSpec, KubernetesSpec)):
        return None
    xgb = spec.xgboost
    host = xgb.tracker_host or client.run_on_scheduler(_scheduler_host)
    low, high = port_range(xgb.tracker_port)
    port = low
    if "-" in str(xgb.tracker_port):  # a range, even of one port: probed
        port = client.run_on_scheduler(_free_port, host, low, high)
        if port is None:
            raise ClusterError(f"xgboost.tracker_port: every port of {xgb.tracker_port} is in use on the "
                               f"scheduler's host ({host}); widen the range or free a port")
    out: dict[str, Any] = {"tracker_host_ip": host, "tracker_port": port}
    if xgb.timeout is not None:
        out["timeout"] = xgb.timeout
    return out


def tracker_note(xgb: XGBoostSpec, where: str) -> str:
    """One line for a rendered spec: where an ``xgboost.dask`` fit's tracker listens, and what to open."""
    host = xgb.tracker_host or f"the host of the scheduler's address ({where})"
    low, high = port_range(xgb.tracker_port)
    if low == high == 0:
        port = "a port the OS picks (open its ephemeral range from the workers)"
    elif low == high:
        port = f"port {low} (open it from the workers)"
    else:
        port = f"the first free port of {low}-{high} (open the range from the workers)"
    return f"xgboost.dask tracker: {host}, {port}"


def _whole_cpus(quantity: str) -> int:
    """A Kubernetes CPU quantity (``"2"``, ``"1.5"``, ``"500m"``) rounded down to whole CPUs, at least 1."""
    millis = float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000
    return max(1, int(millis // 1000))


def worker_threads(spec: ClusterSpec) -> int | None:
    """The threads of each worker process the spec starts (XGBoost's ``nthread`` on it: ``xgboost.dask``
    takes each worker's thread count); None for an existing scheduler (ask its workers:
    ``client.nthreads()``)."""
    if isinstance(spec, SlurmSpec):
        return spec.cores // spec.processes
    if isinstance(spec, KubernetesSpec):
        return spec.threads_per_worker or _whole_cpus(spec.cpu)
    return getattr(spec, "threads_per_worker", None)
