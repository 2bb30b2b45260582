"""distributed's SSHCluster from a ``kind: ssh`` spec: the scheduler on the first host, worker
processes on each of the others, started over SSH (needs ``asyncssh``: ``churn[ssh]``)."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
from typing import Any

import dask.config
from distributed import Client

from churn.clusters.errors import ClusterError, close_on_exit
from churn.clusters.extras import require
from churn.clusters.security import security_for, tls_config
from churn.clusters.tuning import nanny_config, worker_environ
from churn.config import SSHSpec


def _connect_options(spec: SSHSpec) -> dict[str, Any]:
    options: dict[str, Any] = {"known_hosts": spec.known_hosts}
    if spec.username:
        options["username"] = spec.username
    if spec.client_keys:
        options["client_keys"] = spec.client_keys
    return options


def _scheduler_options(spec: SSHSpec) -> dict[str, Any]:
    options = {"port": spec.scheduler_port, "dashboard_address": spec.dashboard_address,
               "dashboard": spec.dashboard_address is not None}
    return {**options, "protocol": "tls"} if spec.tls else options


def _worker_options(spec: SSHSpec) -> dict[str, Any]:
    return {"n_workers": spec.n_workers, "nthreads": spec.threads_per_worker, "memory_limit": spec.memory_limit}


def open_client(spec: SSHSpec, stack: contextlib.ExitStack) -> Client:
    """Start the scheduler and workers over SSH; ``stack`` closes the client and the cluster."""
    require("asyncssh", "ssh", "ssh")
    from distributed.deploy.ssh import SSHCluster

    # the remote processes inherit dask's config (the TLS files, the nannies' worker environment),
    # not the Security object
    try:
        with dask.config.set({**(tls_config(spec.tls) if spec.tls else {}), **nanny_config()}):
            cluster = SSHCluster(spec.hosts, connect_options=_connect_options(spec),
                                 worker_options=_worker_options(spec), scheduler_options=_scheduler_options(spec),
                                 remote_python=spec.remote_python, security=security_for(spec.tls))
    except Exception as exc:  # noqa: BLE001 - ssh, auth and startup failures: one line
        raise ClusterError(f"cannot start SSHCluster on {', '.join(spec.hosts)}: {exc}") from exc
    close_on_exit(stack, cluster)
    return close_on_exit(stack, Client(cluster, security=security_for(spec.tls), set_as_default=False))


def render(spec: SSHSpec) -> str:
    """The command SSHCluster runs on each host, over SSH.

    SSHCluster builds them only once connected (distributed/deploy/ssh.py), so they are written
    out here in the same form: ``python -m distributed.cli.dask_spec`` with a JSON spec, after
    ``env DASK_INTERNAL_INHERIT_CONFIG=...`` (this process's dask config, left out here).
    """
    python = spec.remote_python or sys.executable
    user = f"{spec.username}@" if spec.username else ""
    scheduler_spec = {"cls": "distributed.Scheduler", "opts": _scheduler_options(spec)}
    worker = {k: v for k, v in _worker_options(spec).items() if k != "n_workers"}
    workers_spec = {i: {"cls": "distributed.Nanny", "opts": worker} for i in range(spec.n_workers)}
    scheduler_address = f"{'tls' if spec.tls else 'tcp'}://{spec.hosts[0]}:{spec.scheduler_port}"
    lines = [f"# the scheduler, on {spec.hosts[0]} (ssh {user}{spec.hosts[0]})",
             f"{python} -m distributed.cli.dask_spec --spec {shlex.quote(json.dumps(scheduler_spec))}"]
    for host in spec.hosts[1:]:
        lines += [f"# {spec.n_workers} worker process(es), on {host} (ssh {user}{host})",
                  f"{python} -m distributed.cli.dask_spec {scheduler_address} "
                  f"--spec {shlex.quote(json.dumps(workers_spec))}"]
    lines += [f"# worker environment: {k}={v} (inherited dask config, distributed.nanny.pre-spawn-environ)"
              for k, v in worker_environ().items()]
    if spec.tls:
        lines.append(f"# TLS: CA {spec.tls.ca_file}, certificate {spec.tls.cert}: in the inherited dask config "
                     "(distributed.comm.tls.*), at the same paths on every host")
    return "\n".join(lines) + "\n"
