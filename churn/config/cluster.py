"""The typed cluster spec: where a job runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from churn.config.job import Strict


class ClusterSpec(Strict):
    """A LocalCluster on this machine, bound to loopback unless the spec says otherwise."""

    kind: Literal["local"] = "local"
    host: str = "127.0.0.1"
    n_workers: int = Field(2, ge=1)
    threads_per_worker: int = Field(1, ge=1)
    memory_limit: str | int = "4GiB"
    processes: bool = True
    dashboard_address: str | None = "127.0.0.1:0"  # None: no dashboard
