"""An existing Dask scheduler, reached by address (``tcp://`` or ``tls://``)."""

from __future__ import annotations

import contextlib

from dask.utils import parse_timedelta
from distributed import Client

from churn.clusters.errors import ClusterError, close_on_exit
from churn.clusters.security import security_for
from churn.config import AddressSpec, setting


def connect(address: str, timeout: str | float | None = None, spec: AddressSpec | None = None) -> Client:
    """A client on the scheduler at ``address``; unreachable within ``timeout`` is one ClusterError.

    ``timeout`` defaults to the ``churn.cluster.connect-timeout`` setting.
    """
    secs = parse_timedelta(timeout if timeout is not None else setting("cluster.connect-timeout"))
    security = security_for(spec.tls) if spec is not None else None
    try:
        return Client(address, timeout=secs, security=security, set_as_default=False)
    except (OSError, TimeoutError, RuntimeError) as exc:  # RuntimeError: a TLS/plain mismatch
        raise ClusterError(f"cannot reach Dask scheduler at {address} within {secs:g}s: {exc}") from None


def open_client(spec: AddressSpec, stack: contextlib.ExitStack) -> Client:
    """A client on the spec's scheduler; ``stack`` closes it (the cluster is not ours to close)."""
    return close_on_exit(stack, connect(spec.address, spec.timeout, spec))


def render(spec: AddressSpec) -> str:
    tls = f" with TLS (CA {spec.tls.ca_file}, certificate {spec.tls.cert})" if spec.tls else ""
    return f"connect to the existing scheduler at {spec.address}{tls}; nothing is launched\n"
