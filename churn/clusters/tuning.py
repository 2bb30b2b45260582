"""Worker process settings that every kind of cluster churn starts gets the same way."""

from __future__ import annotations

from dask.utils import parse_bytes

from churn.config import setting


def worker_environ() -> dict[str, str]:
    """Environment variables a worker process must start with (read by glibc at process start,
    so they go into the environment the worker is spawned with, not set from inside it).

    ``MALLOC_MMAP_THRESHOLD_``: see ``cluster.worker-mmap-threshold`` in churn.yaml.
    """
    threshold = setting("cluster.worker-mmap-threshold")
    return {} if threshold is None else {"MALLOC_MMAP_THRESHOLD_": str(parse_bytes(threshold))}
