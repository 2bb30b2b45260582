"""The worker plugin the commands register on their cluster (imports distributed: loaded only when
a command starts or joins one, and on the workers)."""

from __future__ import annotations

import logging
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from churn.cli.quiet import quiet_libraries


class QuietWorkers(WorkerPlugin):
    """The workers' own library chatter stays out of the progress log too (also after a restart):
    e.g. every task cancelled by Ctrl-C would print a warning."""

    name = "churn-quiet-workers"

    def setup(self, worker: Any) -> None:
        quiet_libraries(logging.ERROR)
