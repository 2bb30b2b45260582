"""The scheduler's workers are read from the scheduler, never from the client's refreshed cache."""

from __future__ import annotations

import dask
from distributed import Client

from churn.clusters.info import workers


def test_workers_come_from_the_scheduler_while_the_client_refreshes_its_cache(client):
    """A client whose periodic refresh (cluster totals, no workers) runs every 2 ms: 300 reads in a
    row all name both workers; the cached answer after the refresh names none."""
    with dask.config.set({"distributed.client.scheduler-info-interval": "2ms"}):
        with Client(client.scheduler.address) as fresh:
            expected = set(workers(client))
            assert len(expected) == 2
            assert all(set(workers(fresh)) == expected for _ in range(300))
            fresh.sync(fresh._update_scheduler_info)  # what the periodic refresh does
            assert fresh._scheduler_identity["workers"] == {}  # the cache a bare read could return
            assert all(w["memory_limit"] > 0 for w in workers(fresh).values())
