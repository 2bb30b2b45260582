"""Library loggers kept out of the progress log (no imports beyond logging: the CLI loads it first)."""

from __future__ import annotations

import logging

NOISY = ("distributed", "mlflow", "alembic", "urllib3", "fsspec", "asyncio", "tornado", "skops")


def quiet_libraries(level: int = logging.WARNING) -> None:
    """Keep library chatter below ``level`` out of the progress log (called again after
    distributed loads, on every worker, and at Ctrl-C when the cluster closes under running tasks)."""
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(level)
