"""Worker process settings that every kind of cluster churn starts gets the same way."""

from __future__ import annotations

from dask.utils import parse_bytes

from churn.clusters.errors import ClusterError
from churn.config import setting

GLIBC_MAX_MMAP_THRESHOLD = 32 << 20  # glibc ignores a larger M_MMAP_THRESHOLD on 64-bit, silently


def _size(name: str, value: object, cap: int | None) -> int | None:
    """The byte size ``value`` of setting ``cluster.<name>`` (None: unset), within glibc's limits."""
    if value is None:
        return None
    try:
        size = parse_bytes(value)
    except (TypeError, ValueError):
        size = -1  # not a size: the same message as one out of range
    if size < 0 or (cap is not None and size > cap):
        limit = f"0 to {cap >> 20}MiB" if cap is not None else "a size of 0 or more"
        raise ClusterError(f"churn.cluster.{name}={value!r}: glibc takes {limit}")
    return size


def worker_environ() -> dict[str, str]:
    """Environment variables a worker process must start with (read by glibc at process start,
    so they go into the environment the worker is spawned with, not set from inside it).

    ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``: see ``cluster.worker-mmap-threshold``
    and ``cluster.worker-trim-threshold`` in churn.yaml.
    """
    sizes = {"MALLOC_MMAP_THRESHOLD_": _size("worker-mmap-threshold", setting("cluster.worker-mmap-threshold"),
                                             GLIBC_MAX_MMAP_THRESHOLD),
             "MALLOC_TRIM_THRESHOLD_": _size("worker-trim-threshold", setting("cluster.worker-trim-threshold"), None)}
    return {variable: str(size) for variable, size in sizes.items() if size is not None}


def nanny_config() -> dict[str, str]:
    """:func:`worker_environ` as dask config: the nanny puts it in each worker's environment
    before it spawns the worker (``distributed.nanny.pre-spawn-environ``)."""
    return {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in worker_environ().items()}
