"""The one error type of the clusters layer, and the wait for a cluster's first worker."""

from __future__ import annotations

from dask.utils import parse_timedelta
from distributed import Client

from churn.config import setting


class ClusterError(RuntimeError):
    """The cluster could not be started or reached."""


def wait_for_first_worker(client: Client, what: str, hint: str) -> None:
    """Wait ``churn.cluster.workers-timeout`` for one worker; else ``no {what} started within …
    ({hint})``. Batch jobs and pods may wait for a node or an image pull first."""
    timeout = parse_timedelta(setting("cluster.workers-timeout"))
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterError(f"no {what} started within {timeout:g}s ({hint})") from None
