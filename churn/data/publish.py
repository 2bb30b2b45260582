"""Staging and publishing a dataset so that its name is never missing and never half-written.

A dataset is built in a staging folder (``.staging-<key>-<uuid>``, with an ``owner.json``
naming host and pid), moved to a hidden version folder, and published by pointing the
symbolic link ``dataset-<key>`` at it. The link is created atomically (``symlink`` fails if
the name exists) or, with ``force``, swapped atomically (``rename`` over the old link), so a
reader always finds either the old dataset or the new one.

A job that uses a dataset reads its version folder, not the link, and holds a shared ``flock``
on the folder's ``readers.lock`` for as long as it runs (:func:`hold`; the builder holds it from
the staging folder on). A version folder is removed only by a process that gets the exclusive
lock without waiting: the one that ``--force`` replaced is removed at once when no job reads
it, else left for the cleanup of a later run (:func:`remove_abandoned`). (Locks, not a refusal
of ``--force``: a running job keeps its data, and the rebuild need not wait for it to end.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import uuid
from contextlib import suppress
from pathlib import Path

from churn.data.manifest import IngestError

log = logging.getLogger(__name__)

OWNER = "owner.json"
READERS = "readers.lock"  # jobs using a version folder hold a shared flock on it
_HELD: dict[Path, int] = {}  # version folder → the descriptor whose shared lock this process holds


class DatasetGoneError(IngestError):
    """The dataset a link names was removed, again and again, while this process tried to hold it."""


def _lock_shared(folder: Path) -> int:
    """A descriptor holding a shared lock on ``folder``'s readers' lock (made if missing)."""
    fd = os.open(folder / READERS, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a cleanup that got the folder deletes it
    return fd


def hold_staging(staging: Path) -> None:
    """The builder's shared lock, from its staging folder on (it moves with the folder when published)."""
    _HELD[staging] = _lock_shared(staging)


def hold(folder: Path) -> Path:
    """The version folder ``folder`` (a dataset link, or the folder itself) names, with a shared
    lock on it that this process keeps until :func:`release` or its exit: no cleanup removes it
    meanwhile. A folder removed between resolving the link and locking it is resolved again."""
    for _ in range(10):
        version = folder.resolve()
        if version in _HELD:
            return version
        try:
            fd = _lock_shared(version)
        except FileNotFoundError:
            continue
        if (version / "manifest.json").is_file():
            _HELD[version] = fd
            return version
        os.close(fd)
    raise DatasetGoneError(f"{folder}: removed while this job tried to read it")


def release(version: Path) -> None:
    """Drop this process's shared lock on ``version`` (a later cleanup may then remove it)."""
    fd = _HELD.pop(version, None)
    if fd is not None:
        os.close(fd)


def remove_unused(folder: Path) -> bool:
    """Remove ``folder`` unless a process holds its readers' lock; True when it was removed. (The
    manifest goes first, under the exclusive lock: a reader that locks the folder next sees it gone.)"""
    try:
        fd = os.open(folder / READERS, os.O_RDONLY)
    except FileNotFoundError:  # never held (a folder of an older churn, or a staging folder just made)
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        with suppress(FileNotFoundError):
            (folder / "manifest.json").unlink()
        shutil.rmtree(folder, ignore_errors=True)
        return True
    finally:
        if fd is not None:
            os.close(fd)


def new_staging(out_root: Path, key: str) -> Path:
    """A fresh staging folder owned by this host and process."""
    staging = out_root / f".staging-{key}-{uuid.uuid4().hex[:12]}"
    staging.mkdir(parents=True)
    (staging / OWNER).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    return staging


def _abandoned(folder: Path, *, owner_alive_ok: bool = False) -> bool:
    """Owned by a process of this host that is gone (folders of other hosts are never touched);
    with ``owner_alive_ok``, owned by any process of this host."""
    try:
        owner = json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return False
    if owner.get("host") != socket.gethostname():
        return False
    if owner_alive_ok:
        return True
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError):
        return False
    return False


def remove_abandoned(out_root: Path) -> None:
    """Delete the staging folders left by crashed or killed runs on this host, and the version
    folders of this host that no link names and no job reads (their readers' lock is free)."""
    linked = {os.readlink(p) for p in out_root.glob("dataset-*") if p.is_symlink()}
    for folder in [*out_root.glob(".staging-*"), *out_root.glob(".dataset-*")]:
        unlinked_version = folder.name.startswith(".dataset-") and not folder.name.endswith(".link")
        if folder.name not in linked and _abandoned(folder, owner_alive_ok=unlinked_version) and remove_unused(folder):
            log.info("removed abandoned %s", folder.name)


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
    if old and not remove_unused(final.parent / old):
        log.info("%s: the replaced version %s is in use; a later run removes it", final.name, old)
    return True
