"""The scheduler's current workers, fetched when asked.

``Client.scheduler_info(n_workers=-1)`` fetches every worker and then returns the client's cached
identity, which its own periodic refresh (every ``distributed.client.scheduler-info-interval``)
overwrites with cluster totals and **no** workers. Read between the two, it says a cluster has no
workers: under load that made the full-data fit's watch report both workers lost and stop a
healthy fit, and it would let the memory check pass without checking. This asks the scheduler
and returns its answer, never the cache.
"""

from __future__ import annotations

from typing import Any

from distributed import Client


def workers(client: Client) -> dict[str, dict[str, Any]]:
    """Address -> the scheduler's record of that worker (memory_limit, nthreads, ...), as of now."""
    return dict(client.sync(client.scheduler.identity, n_workers=-1)["workers"])
