"""Sending data to the workers once, and again if a worker dies while it is on its way.

``Client.scatter`` fails outright when a receiving worker dies mid-transfer (``CommClosedError``)
or when no worker is there at all (``TimeoutError``); distributed does not retry it, since the
data lives in the caller. Here it is sent again to the workers that remain, waiting up to
``churn.cluster.no-workers-timeout`` for one to be there.
"""

from __future__ import annotations

import logging
from typing import Any

from dask.utils import parse_timedelta
from distributed import Client, Future

from churn.clusters.errors import ClusterError
from churn.config import setting

log = logging.getLogger(__name__)


def scatter(client: Client, data: list[Any], *, broadcast: bool = False, attempts: int = 3) -> list[Future]:
    """``client.scatter(data)`` (unhashed keys), tried ``attempts`` times; then one ClusterError."""
    wait = parse_timedelta(setting("cluster.no-workers-timeout"))
    for attempt in range(1, attempts + 1):
        try:
            return client.scatter(data, broadcast=broadcast, hash=False)
        except (OSError, TimeoutError) as exc:  # CommClosedError is an OSError
            if attempt == attempts:
                raise ClusterError(f"could not send the data to the workers in {attempts} attempts: {exc}") from None
            log.warning("sending data to the workers failed (%s); trying again", exc)
            try:
                client.wait_for_workers(1, timeout=wait)
            except TimeoutError:
                raise ClusterError(f"the cluster has had no Dask worker for {wait:g}s "
                                   "(churn.cluster.no-workers-timeout); the job stopped") from None
    raise AssertionError("unreachable")
