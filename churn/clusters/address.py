"""An existing Dask scheduler, reached by address (``tcp://`` or ``tls://``)."""

from __future__ import annotations

from dask.utils import parse_timedelta
from distributed import Client

from churn.clusters.errors import ClusterError
from churn.config import setting


def connect(address: str, timeout: str | float | None = None) -> Client:
    """A client on the scheduler at ``address``; unreachable within ``timeout`` is one ClusterError.

    ``timeout`` defaults to the ``churn.cluster.connect-timeout`` setting.
    """
    secs = parse_timedelta(timeout if timeout is not None else setting("cluster.connect-timeout"))
    try:
        return Client(address, timeout=secs, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach Dask scheduler at {address} within {secs:g}s: {exc}") from None
