"""The one error type of the clusters layer, and its bounded waits: for a cluster's first
worker, and for a client or cluster to close."""

from __future__ import annotations

import contextlib
import logging
from typing import TypeVar

from dask.utils import parse_timedelta
from distributed import Client

from churn.config import setting

log = logging.getLogger(__name__)
Closable = TypeVar("Closable")


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


def close_on_exit(stack: contextlib.ExitStack, obj: Closable) -> Closable:
    """Close ``obj`` (a Client or a cluster) when ``stack`` unwinds, within
    ``churn.cluster.close-timeout``, so that no state of the cluster (no worker, a scheduler that
    stopped answering) holds up the job's exit; a close that does not finish is a warning, and
    what is left goes with this process. Returns ``obj``."""
    timeout = parse_timedelta(setting("cluster.close-timeout"))

    def close() -> None:
        try:
            obj.close(timeout=timeout)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - e.g. distributed's TimeoutError: the job's own error matters
            log.warning("%s did not close within %gs: %s", type(obj).__name__, timeout, exc or type(exc).__name__)

    stack.callback(close)
    return obj
