"""The writable-folder check run before any cluster starts (dataset output, local tracking store)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def unwritable_reason(folder: Path) -> str | None:
    """None when ``folder`` exists or can be made and a file can be written in it; else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".churn-write-check-"):
            return None
    except OSError as exc:
        return exc.strerror or str(exc)
