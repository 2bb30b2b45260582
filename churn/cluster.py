"""Getting a Dask cluster: one context manager that yields a ``distributed.Client``.

It starts a LocalCluster from a :class:`~churn.config.ClusterSpec`, or connects to an
existing scheduler by address, and always closes what it started, also when startup fails.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import dask.config
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster

from churn._defaults import setting
from churn.config import ClusterSpec

log = logging.getLogger(__name__)


class ClusterError(RuntimeError):
    """The cluster could not be started or reached."""


# Worker settings that keep CPU-bound fits fast: no sampling profiler stealing cycles
# from every task.
WORKER_CONFIG = {"distributed.worker.profile.enabled": False}


def _local_cluster(spec: ClusterSpec) -> LocalCluster:
    timeout = parse_timedelta(setting("cluster.local-startup-timeout", "60s"))
    with dask.config.set(WORKER_CONFIG):
        return LocalCluster(
            host=spec.host,
            n_workers=spec.n_workers,
            threads_per_worker=spec.threads_per_worker,
            memory_limit=spec.memory_limit,
            processes=spec.processes,
            dashboard_address=spec.dashboard_address or f"{spec.host}:0",
            timeout=timeout,
        )


@contextlib.contextmanager
def cluster_client(
    spec: ClusterSpec | None = None,
    *,
    address: str | None = None,
    timeout: str | float | None = None,
) -> Iterator[Client]:
    """Yield a client on a new LocalCluster (``spec``) or an existing scheduler (``address``).

    ``timeout`` bounds the wait for an existing scheduler; it defaults to the
    ``churn.cluster.connect-timeout`` setting. Everything started here is closed on exit.
    """
    if address is not None and spec is not None:
        raise ValueError("give either a cluster spec or a scheduler address, not both")
    cluster: LocalCluster | None = None
    client: Client | None = None
    try:
        if address is not None:
            secs = parse_timedelta(timeout if timeout is not None else setting("cluster.connect-timeout", "10s"))
            try:
                client = Client(address, timeout=secs, set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise ClusterError(
                    f"cannot reach Dask scheduler at {address} within {secs:g}s: {exc}"
                ) from None
        else:
            spec = spec or ClusterSpec()
            try:
                cluster = _local_cluster(spec)
            except Exception as exc:  # noqa: BLE001 - report any startup failure in one line
                raise ClusterError(f"cannot start LocalCluster on {spec.host}: {exc}") from exc
            client = Client(cluster, set_as_default=False)
        log.info("Dask client ready: %s workers at %s", len(client.scheduler_info(n_workers=-1)["workers"]),
                 client.scheduler.address)
        if client.dashboard_link:
            log.info("Dask dashboard: %s", client.dashboard_link)
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
