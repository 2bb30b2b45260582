"""Getting a Dask cluster: one context manager that yields a ``distributed.Client``.

It starts a LocalCluster from a :class:`~churn.config.ClusterSpec` (:mod:`.local`), or
connects to an existing scheduler by address (:mod:`.address`), and always closes what it
started, also when startup fails.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.request
from collections.abc import Iterator

from distributed import Client, LocalCluster

from churn.clusters import address as address_kind
from churn.clusters import local as local_kind
from churn.clusters.errors import ClusterError
from churn.config import ClusterSpec

log = logging.getLogger(__name__)

__all__ = ["ClusterError", "cluster_client", "dashboard_link"]


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


@contextlib.contextmanager
def cluster_client(
    spec: ClusterSpec | None = None,
    *,
    address: str | None = None,
    timeout: str | float | None = None,
) -> Iterator[Client]:
    """Yield a client on a new LocalCluster (``spec``) or an existing scheduler (``address``).

    ``timeout`` bounds the wait for an existing scheduler. Everything started here is closed
    on exit, also when startup fails half-way.
    """
    if address is not None and spec is not None:
        raise ValueError("give either a cluster spec or a scheduler address, not both")
    cluster: LocalCluster | None = None
    client: Client | None = None
    try:
        if address is not None:
            client = address_kind.connect(address, timeout)
        else:
            cluster = local_kind.start(spec or ClusterSpec())
            client = Client(cluster, set_as_default=False)
        log.info("Dask client ready: %s workers at %s", len(client.scheduler_info(n_workers=-1)["workers"]),
                 client.scheduler.address)
        link = dashboard_link(client)
        if link:
            log.info("Dask dashboard: %s", link)
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
