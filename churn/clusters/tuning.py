"""Worker process settings that every kind of cluster churn starts gets the same way."""

from __future__ import annotations

from dask.utils import parse_bytes

from churn.clusters.errors import ClusterError
from churn.config import setting

GLIBC_MAX_MMAP_THRESHOLD = 32 << 20  # glibc ignores a larger M_MMAP_THRESHOLD on 64-bit, silently


def worker_environ() -> dict[str, str]:
    """Environment variables a worker process must start with (read by glibc at process start,
    so they go into the environment the worker is spawned with, not set from inside it).

    ``MALLOC_MMAP_THRESHOLD_``: see ``cluster.worker-mmap-threshold`` in churn.yaml.
    """
    threshold = setting("cluster.worker-mmap-threshold")
    if threshold is None:
        return {}
    try:
        size = parse_bytes(threshold)
    except (TypeError, ValueError):
        size = -1  # not a size: the same message as one out of range
    if not 0 <= size <= GLIBC_MAX_MMAP_THRESHOLD:
        raise ClusterError(f"churn.cluster.worker-mmap-threshold={threshold!r}: glibc takes 0 to 32MiB")
    return {"MALLOC_MMAP_THRESHOLD_": str(size)}


def nanny_config() -> dict[str, str]:
    """:func:`worker_environ` as dask config: the nanny puts it in each worker's environment
    before it spawns the worker (``distributed.nanny.pre-spawn-environ``)."""
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in worker_environ().items()}
