"""TLS for a cluster spec: distributed's ``Security`` from the spec's CA, certificate and key files.

The scheduler unpickles what clients send, so on a shared network TLS with a private CA is what
keeps strangers from running code on the cluster.
"""

from __future__ import annotations

import os

from distributed.security import Security

from churn.config import TLSSpec


def security_for(tls: TLSSpec | None) -> Security | None:
    """One certificate for every role (client, scheduler, worker), signed by the spec's CA."""
    if tls is None:
        return None
    cert = os.path.expanduser(tls.cert)
    key = os.path.expanduser(tls.key) if tls.key else None
    roles = {f"tls_{role}_{part}": value for role in ("client", "scheduler", "worker")
             for part, value in (("cert", cert), ("key", key))}
    return Security(tls_ca_file=os.path.expanduser(tls.ca_file), require_encryption=tls.require_encryption, **roles)
