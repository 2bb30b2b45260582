"""A scheduler plugin for the resume tests: counts the churn engine's model fits the cluster ran.

Kept apart from the tests so that a ``dask scheduler`` process imports only this (its PYTHONPATH
holds the repository; the plugin is pickled by reference)."""

from __future__ import annotations

from distributed.diagnostics.plugin import SchedulerPlugin


class FitCount(SchedulerPlugin):
    """Keys of ``_fit_group`` tasks that finished (reached memory) since the last :meth:`reset`."""

    name = "fit-count"

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def transition(self, key, start, finish, *args, **kwargs) -> None:
        if finish == "memory" and str(key).startswith("_fit_group-"):
            self.keys.add(str(key))

    def reset(self) -> None:
        self.keys = set()


def fits_run(dask_scheduler) -> int:
    """(on the scheduler) fits finished since the last reset."""
    return len(dask_scheduler.plugins[FitCount.name].keys)


def reset(dask_scheduler) -> None:
    """(on the scheduler) start counting again."""
    dask_scheduler.plugins[FitCount.name].reset()


def search_tasks(dask_scheduler) -> int:
    """(on the scheduler) fold preparations and fits it still holds (a lost driver's go with its client)."""
    return sum(str(key).startswith(("_fit_group-", "_prepare_fold-")) for key in dask_scheduler.tasks)
