"""Staging and publishing a dataset so that its name is never missing and never half-written.

A dataset is built in a staging folder (``.staging-<key>-<uuid>``, with an ``owner.json``
naming host and pid), moved to a hidden version folder, and published by pointing the
symbolic link ``dataset-<key>`` at it. The link is created atomically (``symlink`` fails if
the name exists) or, with ``force``, swapped atomically (``rename`` over the old link), so a
reader always finds either the old dataset or the new one. Only then is the replaced version
removed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

OWNER = "owner.json"


def new_staging(out_root: Path, key: str) -> Path:
    """A fresh staging folder owned by this host and process."""
    staging = out_root / f".staging-{key}-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    (staging / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    return staging


def _abandoned(folder: Path) -> bool:
    """Owned by a process of this host that is gone (folders of other hosts are never touched)."""
    try:
        owner = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def remove_abandoned(out_root: Path) -> None:
    """Delete staging and unlinked version folders left by crashed or killed runs on this host."""
    linked = {os.readlink(p) for p in out_root.glob("dataset-*") if p.is_symlink()}
    for folder in [*out_root.glob(".staging-*"), *out_root.glob(".dataset-*")]:
        if folder.name not in linked and _abandoned(folder):
            log.info("removing abandoned %s", folder.name)
            shutil.rmtree(folder, ignore_errors=True)


def publish(staging: Path, final: Path, *, force: bool) -> bool:
    """Publish ``staging`` as ``final``; returns False when another run published it first
    (without ``force``: that dataset is kept, this one discarded)."""
    version = final.parent / f".{final.name}-{uuid.uuid4().hex[:12]}"
    os.rename(staging, version)
    if not force:
        try:
            os.symlink(version.name, final)
            return True
        except FileExistsError:
            shutil.rmtree(version, ignore_errors=True)
            return False
    link = final.parent / f".{final.name}-{uuid.uuid4().hex[:12]}.link"
    os.symlink(version.name, link)
    old = os.readlink(final) if final.is_symlink() else None
    if final.exists() and not final.is_symlink():  # a dataset folder of an older layout
        aside = final.parent / f".{final.name}-{uuid.uuid4().hex[:12]}"
        os.rename(final, aside)
        old = aside.name
    os.replace(link, final)  # atomic: readers see the old link or the new one
    if old:
        shutil.rmtree(final.parent / old, ignore_errors=True)
    return True
