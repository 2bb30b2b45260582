"""The measured side of ingest's duplicate count: distinct ids counted over the files written.

:mod:`churn.data.dedup` decides which rows to drop; nothing here asks it. Per block, one task
reads the ids of three sets back from disk: S, the staged clean rows (every row that passed
validation); K, the written Parquet partition (the rows kept); C, the quarantine partition's
``conflicting_label`` rows. It writes their 64-bit id hashes (``_key``, the hash of the id text
that validation gave each row; for C, computed here the same way), sorted; then one task per
hash range counts the distinct ids of S, K, C, K ∪ C and S ∪ K ∪ C in its range. An id hashes
to one range, so the ranges' counts add up. (Hashes, not id texts: a hash table of the texts
cost as much as parsing the blocks. Two distinct ids with one hash, about n²/2^65 likely for n
ids, count as one: both kept, the ingest fails; one of them wrongly dropped would go unseen.)

A correct ingest keeps each id of S exactly once, unless it conflicts: then all its rows are in
C. So K holds no id twice (distinct K = rows of K), K and C share no id and together hold every
id of S and nothing else. The duplicates are then measured: rows of S - rows of K - rows of C.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churn.data.columns import KEY_COLUMN
from churn.data.dedup import CONFLICT, read_staged
from churn.data.hashing import hash_text
from churn.data.manifest import IngestError

SETS = ("staged", "kept", "conflicting")


def _ids_path(staging: str, block_index: int, which: str) -> str:
    return os.path.join(staging, "keys", f"{block_index:05d}-ids-{which}.npy")


def stage_ids(staging: str, block_index: int, id_column: str) -> int:
    """Write the sorted id hashes of the block's S, K and C; returns how many."""
    name = f"part-{block_index:05d}.parquet"
    quarantine = pq.read_table(os.path.join(staging, "quarantine", name), columns=[id_column, "_reasons"])
    conflicting = quarantine.filter(pc.equal(quarantine.column("_reasons"), CONFLICT)).column(id_column)
    sets = [read_staged(staging, block_index, [KEY_COLUMN]).column(KEY_COLUMN).to_numpy(),
            pq.read_table(os.path.join(staging, "data", name), columns=[KEY_COLUMN]).column(KEY_COLUMN).to_numpy(),
            hash_text(conflicting)]
    for which, keys in zip(SETS, sets, strict=True):
        np.save(_ids_path(staging, block_index, which), np.sort(np.asarray(keys, np.uint64)))
    return sum(len(k) for k in sets)


@dataclass(frozen=True)
class IdCounts:
    """Rows and distinct ids of S (staged), K (kept) and C (conflicting), and of their unions."""

    staged_rows: int = 0
    kept_rows: int = 0
    conflict_rows: int = 0
    staged: int = 0
    kept: int = 0
    conflicting: int = 0
    kept_or_conflicting: int = 0
    any: int = 0

    def __add__(self, other: IdCounts) -> IdCounts:
        return IdCounts(*(a + b for a, b in zip(self.__dict__.values(), other.__dict__.values(), strict=True)))


def _distinct(keys: np.ndarray) -> np.ndarray:
    """The distinct values of sorted ``keys``."""
    return keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys


def _member(values: np.ndarray, within: np.ndarray) -> np.ndarray:
    """Which of the sorted ``values`` are in the sorted ``within`` (binary search, no sort)."""
    if not len(within):
        return np.zeros(len(values), bool)
    at = np.minimum(np.searchsorted(within, values), len(within) - 1)
    return within[at] == values


def _outside(values: np.ndarray, within: np.ndarray) -> int:
    """How many of the sorted ``values`` are not in the sorted ``within``."""
    return int(np.count_nonzero(~_member(values, within)))


def count_range(staging: str, blocks: list[int], lo: int, hi: int | None) -> IdCounts:
    """Rows and distinct ids of each set among the ids hashed into [lo, hi) (``hi=None``: to the end)."""
    rows, distinct = {}, {}
    for which in SETS:
        parts = []
        for b in blocks:
            keys = np.load(_ids_path(staging, b, which), mmap_mode="r")
            i = int(np.searchsorted(keys, np.uint64(lo)))
            j = len(keys) if hi is None else int(np.searchsorted(keys, np.uint64(hi)))
            parts.append(np.asarray(keys[i:j]))
        keys = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)
        rows[which], distinct[which] = len(keys), _distinct(keys)
    s, k, c = (distinct[w] for w in SETS)
    k_or_c = len(k) + _outside(c, k)
    return IdCounts(staged_rows=rows["staged"], kept_rows=rows["kept"], conflict_rows=rows["conflicting"],
                    staged=len(s), kept=len(k), conflicting=len(c), kept_or_conflicting=k_or_c,
                    any=len(s) + _outside(k, s) + _outside(c, s) - _outside(c[_member(c, k)], s))


def measured_duplicates(counts: IdCounts, dropped: int) -> int:
    """The duplicates the files show (rows of S - rows of K - rows of C), once the sets are as a
    correct ingest leaves them; ``dropped``, the duplicate check's own count, must agree. Else an
    IngestError naming the difference."""
    problem = None
    if counts.kept != counts.kept_rows:
        problem = (f"the {counts.kept_rows} kept rows hold {counts.kept} distinct ids: "
                   f"{counts.kept_rows - counts.kept} repeated id(s) were kept")
    elif not counts.kept_or_conflicting == counts.any == counts.staged == counts.kept + counts.conflicting:
        problem = (f"the clean rows hold {counts.staged} distinct ids, but {counts.kept} are kept and "
                   f"{counts.conflicting} quarantined as {CONFLICT} ({counts.kept_or_conflicting} in all, "
                   f"{counts.any} with the clean rows'): an id was lost, or kept and quarantined both")
    elif counts.staged_rows - counts.kept_rows - counts.conflict_rows != dropped:
        problem = (f"{counts.staged_rows - counts.kept_rows - counts.conflict_rows} duplicate rows are missing from "
                   f"the files, but the duplicate check dropped {dropped}")
    if problem:
        raise IngestError(f"duplicate count not confirmed: {problem}; nothing was published")
    return dropped
