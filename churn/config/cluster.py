"""The typed cluster spec: where a job runs. One kind per YAML file in ``cluster/``.

``kind`` picks the class (a pydantic discriminated union), as dask-jobqueue has one class per
queueing system: ``local`` (a LocalCluster on this machine), ``address`` (an existing
scheduler), ``ssh`` (distributed's SSHCluster), ``slurm`` (dask-jobqueue) and ``kubernetes``
(dask-kubernetes' operator). Launching lives in :mod:`churn.clusters`, one module per kind.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal, Union

from pydantic import Field, TypeAdapter, field_validator, model_validator

from churn.config.job import Strict


class TLSSpec(Strict):
    """TLS for every connection of the cluster: the CA that signs the certificates, and this
    side's certificate and key (PEM files). With ``require_encryption`` plain ``tcp://`` is refused."""

    ca_file: str
    cert: str
    key: str | None = None  # None: the key is in the cert file
    require_encryption: bool = True

    @model_validator(mode="after")
    def _files_exist(self) -> TLSSpec:
        for name in ("ca_file", "cert", "key"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(os.path.expanduser(path)):
                raise ValueError(f"tls.{name}: file not found: {path}")
        return self


class KubernetesTLSSpec(TLSSpec):
    """TLS for a Kubernetes cluster. The pods take their certificates from the Secret ``secret``
    (keys ``ca.crt``, ``tls.crt``, ``tls.key``: cert-manager's layout), mounted read-only; the
    CA, certificate and key files are the driver's own, for its connection to the scheduler."""

    secret: str = Field(min_length=1)


class LocalClusterSpec(Strict):
    """A LocalCluster on this machine, bound to loopback unless the spec says otherwise."""

    kind: Literal["local"] = "local"
    host: str = "127.0.0.1"
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | int = "4GiB"
    processes: bool = True
    dashboard_address: str | None = "127.0.0.1:0"  # None: no dashboard
    tls: TLSSpec | None = None


class AddressSpec(Strict):
    """An existing Dask scheduler, reached by address."""

    kind: Literal["address"] = "address"
    address: str
    timeout: str | None = None  # None: the churn.cluster.connect-timeout setting
    tls: TLSSpec | None = None

    @field_validator("address")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if "://" not in value:
            return f"tcp://{value}"  # host:port, as the dask CLI takes it
        if not value.startswith(("tcp://", "tls://")):
            raise ValueError(f"expected a tcp:// or tls:// address, got {value!r}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _bare_address_with_tls(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("tls") and "://" not in str(data.get("address", "://")):
            return {**data, "address": f"tls://{data['address']}"}  # host:port with a tls section
        return data

    @model_validator(mode="after")
    def _tls_address(self) -> AddressSpec:
        if self.address.startswith("tls://") and self.tls is None:
            raise ValueError("a tls:// address needs a tls section (ca_file, cert, key)")
        if self.address.startswith("tcp://") and self.tls is not None:
            raise ValueError("a tls section needs a tls:// address, not tcp://")
        return self


class SSHSpec(Strict):
    """distributed's SSHCluster: the scheduler on the first host, workers on the others."""

    kind: Literal["ssh"] = "ssh"
    hosts: list[str] = Field(min_length=2)  # first: the scheduler; the rest: one worker group each
    username: str | None = None
    known_hosts: str | None = "~/.ssh/known_hosts"  # None disables host key checking: don't
    client_keys: list[str] | None = None
    remote_python: str | None = None  # None: the same path as this Python
    n_workers: int = Field(1, ge=1)  # worker processes per host
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | int = "4GiB"
    scheduler_port: int = 8786
    dashboard_address: str | None = ":8787"
    tls: TLSSpec | None = None


class XGBoostSpec(Strict):
    """What ``xgboost.dask`` needs from a cluster besides Dask's own ports: its collective's tracker.

    XGBoost starts the tracker on the scheduler's host at each ``xgboost.dask`` fit; every worker
    connects to it there (and the workers to one another, on ports they pick, as Dask's workers
    already do). ``tracker_host``: the address it listens on, which the workers reach; None: the
    host of the scheduler's own address (the one the workers already reach the scheduler at).
    ``tracker_port``: 0, the OS picks a free port (open its ephemeral range,
    ``net.ipv4.ip_local_port_range``, from the workers to the scheduler's host); a port; or a
    range ``"LOW-HIGH"``, the first free port in it (open that range). ``timeout``: seconds a
    collective operation may take before XGBoost fails it; None: XGBoost's default.
    """

    tracker_host: str | None = Field(None, min_length=1)
    tracker_port: int | str = 0
    timeout: int | None = Field(None, ge=1)

    @field_validator("tracker_port")
    @classmethod
    def _port_or_range(cls, value: int | str) -> int | str:
        low, high = port_range(value)
        if not 0 <= low <= high <= 65535 or (low == 0 and high != 0):
            raise ValueError(f"expected 0, a port (1-65535) or a range LOW-HIGH of ports, got {value!r}")
        return value


def port_range(value: int | str) -> tuple[int, int]:
    """``8789`` → (8789, 8789); ``"9000-9099"`` → (9000, 9099); anything else: ValueError."""
    if isinstance(value, int):
        return value, value
    low, sep, high = value.partition("-")
    try:
        return (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ValueError(f"expected 0, a port (1-65535) or a range LOW-HIGH of ports, got {value!r}") from None


class SlurmSpec(Strict):
    """dask-jobqueue's SLURMCluster: the scheduler here, each worker group one ``sbatch`` job."""

    kind: Literal["slurm"] = "slurm"
    jobs: int = Field(2, ge=1)
    cores: int = Field(ge=1)
    memory: str
    processes: int = Field(1, ge=1)  # worker processes per job (threads = cores / processes)
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    python: str | None = None  # the workers' Python; None: the same path as this Python
    interface: str | None = None  # network interface the workers listen on (e.g. ib0)
    job_extra_directives: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)  # e.g. "source /opt/venv/bin/activate"
    local_directory: str | None = None
    log_directory: str | None = None
    dashboard_address: str | None = ":8787"
    tls: TLSSpec | None = None  # the files on the shared filesystem, at the same paths on every node
    xgboost: XGBoostSpec = Field(default_factory=XGBoostSpec)  # the tracker of an xgboost.dask fit

    @model_validator(mode="after")
    def _whole_threads(self) -> SlurmSpec:
        if self.cores % self.processes:
            raise ValueError(f"cores ({self.cores}) must be a multiple of processes ({self.processes}): each "
                             "worker process gets cores / processes threads")
        return self


class KubernetesSpec(Strict):
    """A ``DaskCluster`` resource for the dask-kubernetes operator (which must be installed)."""

    kind: Literal["kubernetes"] = "kubernetes"
    name: str = "churn"
    namespace: str | None = None
    image: str
    n_workers: int = Field(2, ge=1)
    cpu: str = "1"
    memory: str = "4Gi"
    threads_per_worker: int | None = Field(None, ge=1)  # None: the pod's whole CPUs (cpu rounded down, >= 1)
    env: dict[str, str] = Field(default_factory=dict)
    tls: KubernetesTLSSpec | None = None
    # with tls: where the driver reaches the scheduler; None: the scheduler's Service by name
    # (tls://NAME-scheduler.NAMESPACE:8786, reachable when churn runs inside the Kubernetes cluster)
    scheduler_address: str | None = None
    xgboost: XGBoostSpec = Field(default_factory=XGBoostSpec)  # the tracker of an xgboost.dask fit

    @model_validator(mode="after")
    def _tls_address(self) -> KubernetesSpec:
        if self.scheduler_address is None:
            return self
        if self.tls is None:
            raise ValueError("scheduler_address is for a tls section; without one the scheduler is found "
                             "through its Service")
        if not self.scheduler_address.startswith("tls://"):
            raise ValueError(f"with a tls section scheduler_address must be tls://, got {self.scheduler_address!r}")
        return self


ClusterSpec = Annotated[
    Union[LocalClusterSpec, AddressSpec, SSHSpec, SlurmSpec, KubernetesSpec],  # noqa: UP007 - py3.10 pydantic
    Field(discriminator="kind"),
]
CLUSTER_SPEC = TypeAdapter(ClusterSpec)
