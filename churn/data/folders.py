"""The writable-folder check run before any cluster starts (dataset output, local tracking store),
and the names of the folders a run writes (scores, monitoring reports)."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path


def run_folder_name(prefix: str, at: float | None = None) -> str:
    """``prefix-YYYYMMDDTHHMMSSZ-xxxxxxxx``: sorted by time, and unique per run even when two runs
    start in the same second (a name made of the time alone was shared by such runs: one monitor
    logged the other's report, and the later of two score runs failed after all its work)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if at is None else at))
    return f"{prefix}-{stamp}-{secrets.token_hex(4)}"


def unwritable_reason(folder: Path) -> str | None:
    """None when ``folder`` exists or can be made and a file can be written in it; else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".churn-write-check-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
