"""TLS for a cluster spec: distributed's ``Security`` from the spec's CA, certificate and key files.

The scheduler unpickles what clients send, so on a shared network TLS with a private CA is what
keeps strangers from running code on the cluster.
"""

from __future__ import annotations

import os

import dask.config
from distributed.security import Security

from churn.config import TLSSpec


def tls_config(tls: TLSSpec) -> dict[str, object]:
    """The same TLS settings as dask config keys: processes started elsewhere (SSHCluster's remote
    scheduler and workers) inherit dask's config, not a ``Security`` object. The files must be
    at the same paths on every host."""
    ca, cert = os.path.expanduser(tls.ca_file), os.path.expanduser(tls.cert)
    # no key file: the key is in the cert file, named as the key too (a worker's command line needs a path)
    key = os.path.expanduser(tls.key) if tls.key else cert
    out: dict[str, object] = {"distributed.comm.require-encryption": tls.require_encryption,
                              "distributed.comm.tls.ca-file": ca}
    for role in ("client", "scheduler", "worker"):
        out[f"distributed.comm.tls.{role}.cert"] = cert
        out[f"distributed.comm.tls.{role}.key"] = key
    return out


def security_for(tls: TLSSpec | None) -> Security | None:
    """One certificate for every role (client, scheduler, worker), signed by the spec's CA:
    ``Security`` reads the same keys :func:`tls_config` sets."""
    if tls is None:
        return None
    with dask.config.set(tls_config(tls)):
        return Security()
