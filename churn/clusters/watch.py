"""A job whose cluster has lost every worker fails within a set time instead of waiting forever.

The scheduler keeps tasks with no worker to run them waiting, by default for ever (its own
``no-workers-timeout`` is the cluster operator's setting, not the job's), so the client watches:
after ``churn.cluster.no-workers-timeout`` with no worker (or no scheduler) it cancels the
client's futures, which ends whatever gather the job is blocked in, and keeps cancelling the
ones the job submits after that until the job has stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType

from distributed import Client, Future

from churn.clusters.info import workers as cluster_workers

log = logging.getLogger(__name__)


class WorkerWatch:
    """Context manager: watches ``client``'s cluster from a thread; ``message`` is set when it gave up."""

    def __init__(self, client: Client, timeout: float, poll: float = 1.0):
        self.client = client
        self.timeout = timeout
        self.poll = min(poll, max(timeout / 4, 0.1))
        self.message: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="churn-worker-watch", daemon=True)

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def workers(self) -> int:
        """Workers the scheduler has now (0 when it does not answer)."""
        try:
            return len(cluster_workers(self.client))
        except Exception:  # noqa: BLE001 - a scheduler that does not answer has no workers for us
            return 0

    def _run(self) -> None:
        since: float | None = None
        while not self._stop.wait(self.poll):
            if self.message is None:
                if self.workers():
                    since = None
                    continue
                since = since or time.monotonic()
                if time.monotonic() - since < self.timeout:
                    continue
                self.message = (f"the cluster has had no Dask worker for {self.timeout:g}s "
                                "(churn.cluster.no-workers-timeout); the job stopped")
                log.error("%s", self.message)
            # from now on, until the job has stopped: also the tasks it submits after this moment
            # (a driver still preparing its first stage when the timeout passed) would wait for ever
            self._cancel_all()

    def _cancel_all(self) -> None:
        """Cancel every future of the client that is not cancelled yet; the waits on them end."""
        states = self.client.futures
        keys = [key for key in list(states) if getattr(states.get(key), "status", None) != "cancelled"]
        if not keys:
            return
        try:
            self.client.cancel([Future(key, self.client) for key in keys], force=True, reason="no-workers",
                               msg=self.message)
        except Exception:  # noqa: BLE001 - the scheduler may be gone too; the client then fails by itself
            pass
