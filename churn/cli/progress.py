"""Live progress of a search in a terminal: fits done out of the total, per family, with an ETA.

Fed by the search's fit completions (``churn.modeling.search.Progress``). When the output is not
a terminal (a log file, CI), no bars: one log line per family as that family's last fit ends.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("churn.search")


class FitProgress:
    """A callable ``(family, done, total)`` drawing one bar per family on ``console``."""

    def __init__(self, console: Console):
        self.console = console
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, float] = {}  # family -> when its first report came (no terminal)
        self.finished: set[str] = set()

    def __enter__(self) -> FitProgress:
        if self.console.is_terminal:
            self.progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("fits"), TimeElapsedColumn(), TextColumn("ETA"),
                                     TimeRemainingColumn(), console=self.console)
            self.progress.start()
        return self

    def __call__(self, family: str, done: int, total: int) -> None:
        if self.progress is None:
            start = self.started.setdefault(family, time.perf_counter())
            if done == total and total and family not in self.finished:
                self.finished.add(family)
                log.info("search %s: all %d fits done in %.1f s", family or "-", total, time.perf_counter() - start)
            return
        if family not in self.tasks:
            self.tasks[family] = self.progress.add_task(family or "search", total=total)
        self.progress.update(self.tasks[family], completed=done, total=total)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.progress is not None:
            self.progress.stop()
