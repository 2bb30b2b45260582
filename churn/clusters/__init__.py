"""Getting a Dask cluster: one context manager that yields a ``distributed.Client``.

One module per cluster kind (as dask-jobqueue has one class per queueing system): :mod:`.local`,
:mod:`.address`, :mod:`.ssh`, :mod:`.slurm`, :mod:`.kubernetes`. Each opens a client on an
``ExitStack`` and renders what it would launch. :func:`cluster_client` always closes what it
started, also when startup fails half-way. :mod:`.collective`: what an ``xgboost.dask`` fit
needs from the spec (:func:`xgboost_collective`, :func:`worker_threads`).
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
from collections.abc import Iterator
from concurrent.futures import CancelledError
from types import ModuleType

from dask.utils import parse_timedelta
from distributed import Client

from churn.clusters import address as address_kind
from churn.clusters import kubernetes as kubernetes_kind
from churn.clusters import local as local_kind
from churn.clusters import slurm as slurm_kind
from churn.clusters import ssh as ssh_kind
from churn.clusters.collective import worker_threads, xgboost_collective
from churn.clusters.errors import ClusterError
from churn.clusters.info import workers as cluster_workers
from churn.clusters.watch import WorkerWatch
from churn.config import AddressSpec, ClusterSpec, LocalClusterSpec, setting

log = logging.getLogger(__name__)

__all__ = ["ClusterError", "cluster_client", "dashboard_link", "render", "worker_threads", "xgboost_collective"]

KINDS: dict[str, ModuleType] = {"local": local_kind, "address": address_kind, "ssh": ssh_kind,
                                "slurm": slurm_kind, "kubernetes": kubernetes_kind}


def dashboard_link(client: Client, timeout: float = 2.0) -> str | None:
    """The dashboard URL when the scheduler really serves a page there, else None.

    The scheduler's HTTP server also runs without a dashboard (``--no-dashboard``), so the
    link is asked for, not assumed.
    """
    try:
        link = client.dashboard_link
        with urllib.request.urlopen(link, timeout=timeout) as resp:  # noqa: S310 - the scheduler's own URL
            return link if resp.status == 200 else None
    except (OSError, ValueError, KeyError):
        return None


def render(spec: ClusterSpec) -> str:
    """What ``spec`` would launch (an sbatch script, a DaskCluster manifest, ssh commands),
    without launching anything."""
    return KINDS[spec.kind].render(spec)


@contextlib.contextmanager
def cluster_client(
    spec: ClusterSpec | None = None,
    *,
    address: str | None = None,
    timeout: str | float | None = None,
) -> Iterator[Client]:
    """Yield a client on the cluster ``spec`` describes, or on the scheduler at ``address``.

    ``timeout`` bounds the wait for an existing scheduler. Everything started here is closed
    on exit, also when startup fails half-way.
    """
    if address is not None and spec is not None:
        raise ValueError("give either a cluster spec or a scheduler address, not both")
    if address is not None:
        spec = AddressSpec(address=address, timeout=None if timeout is None else str(timeout))
    spec = spec or LocalClusterSpec()
    with contextlib.ExitStack() as stack:
        client = KINDS[spec.kind].open_client(spec, stack)
        log.info("Dask client ready: %s workers at %s", len(cluster_workers(client)),
                 client.scheduler.address)
        link = dashboard_link(client)
        if link:
            log.info("Dask dashboard: %s", link)
        watch = stack.enter_context(WorkerWatch(client, parse_timedelta(setting("cluster.no-workers-timeout"))))
        try:
            yield client
        except BaseException as exc:
            if watch.message:
                raise ClusterError(watch.message) from exc
            if isinstance(exc, CancelledError) and not watch.workers():
                # the scheduler forgets data whose every holder died, and cancels the tasks needing it
                raise ClusterError("the cluster lost every worker, and with them the data the job had sent; "
                                   "the job stopped") from exc
            raise
