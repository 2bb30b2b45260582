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

STAGED, KEPT, CONFLICTING = 0, 1, 2


def _ids_path(staging: str, block_index: int) -> str:
    return os.path.join(staging, "keys", f"{block_index:05d}-ids.npy")


IDS = np.dtype([("hash", "<u8"), ("set", "i1")])


def stage_ids(staging: str, block_index: int, id_column: str) -> int:
    """Write the id hashes of the block's S, K and C (tagged), sorted; returns how many."""
    name = f"part-{block_index:05d}.parquet"
    quarantine = pq.read_table(os.path.join(staging, "quarantine", name), columns=[id_column, "_reasons"])
    conflicting = quarantine.filter(pc.equal(quarantine.column("_reasons"), CONFLICT)).column(id_column)
    sets = [read_staged(staging, block_index, [KEY_COLUMN]).column(KEY_COLUMN).to_numpy(),
            pq.read_table(os.path.join(staging, "data", name), columns=[KEY_COLUMN]).column(KEY_COLUMN).to_numpy(),
            hash_text(conflicting)]
    keys = np.concatenate(sets).astype(np.uint64, copy=False)
    order = np.argsort(keys, kind="stable")
    out = np.empty(len(keys), IDS)
    out["hash"] = keys[order]
    out["set"] = np.repeat(np.array([STAGED, KEPT, CONFLICTING], np.int8), [len(s) for s in sets])[order]
    np.save(_ids_path(staging, block_index), out)
    return len(out)


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


def count_range(staging: str, blocks: list[int], lo: int, hi: int | None) -> IdCounts:
    """Rows and distinct ids of each set among the ids hashed into [lo, hi) (``hi=None``: to the end)."""
    parts = []
    for b in blocks:
        ids = np.load(_ids_path(staging, b), mmap_mode="r")
        i = int(np.searchsorted(ids["hash"], np.uint64(lo)))
        j = len(ids) if hi is None else int(np.searchsorted(ids["hash"], np.uint64(hi)))
        parts.append(np.asarray(ids[i:j]))
    ids = np.concatenate(parts) if parts else np.empty(0, IDS)
    order = np.argsort(ids["hash"], kind="stable")  # merges the blocks' sorted runs
    h, tag = ids["hash"][order], ids["set"][order]
    new = np.ones(len(h), bool)  # the first row of each distinct id
    new[1:] = h[1:] != h[:-1]
    group = np.cumsum(new) - 1

    def present(which: int) -> np.ndarray:
        has = np.zeros(int(new.sum()), bool)
        has[group[tag == which]] = True
        return has

    s, k, c = present(STAGED), present(KEPT), present(CONFLICTING)
    return IdCounts(staged_rows=int((tag == STAGED).sum()), kept_rows=int((tag == KEPT).sum()),
                    conflict_rows=int((tag == CONFLICTING).sum()), staged=int(s.sum()), kept=int(k.sum()),
                    conflicting=int(c.sum()), kept_or_conflicting=int((k | c).sum()), any=len(s))


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
