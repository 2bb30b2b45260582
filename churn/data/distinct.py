"""The measured side of ingest's duplicate count: distinct ids counted over the files written.

:mod:`churn.data.dedup` decides which rows to drop; nothing here asks it. Per block, one task
reads the ids of three sets back from disk: S, the staged clean rows (every row that passed
validation); K, the written Parquet partition (the rows kept); C, the quarantine partition's
``conflicting_label`` rows. It writes them sorted by id hash; then one task per hash range
counts, by exact id text (``pyarrow.compute.count_distinct``), the distinct ids of S, K, C,
K ∪ C and S ∪ K ∪ C in its range. An id hashes to one range, so the ranges' counts add up.

A correct ingest keeps each id of S exactly once, unless it conflicts: then all its rows are in
C. So K holds no id twice (distinct K = rows of K), K and C share no id and together hold every
id of S and nothing else. The duplicates are then measured: rows of S - rows of K - rows of C.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churn.data.dedup import CONFLICT, read_staged
from churn.data.hashing import hash_text
from churn.data.manifest import IngestError

STAGED, KEPT, CONFLICTING = 0, 1, 2


def _ids_path(staging: str, block_index: int) -> str:
    return os.path.join(staging, "keys", f"{block_index:05d}-ids.arrow")


def stage_ids(staging: str, block_index: int, id_column: str) -> int:
    """Write the block's ids of S, K and C (tagged) sorted by their hash; returns how many."""
    name = f"part-{block_index:05d}.parquet"
    quarantine = pq.read_table(os.path.join(staging, "quarantine", name), columns=[id_column, "_reasons"])
    sets = [read_staged(staging, block_index, [id_column]).column(id_column),
            pq.read_table(os.path.join(staging, "data", name), columns=[id_column]).column(id_column),
            quarantine.filter(pc.equal(quarantine.column("_reasons"), CONFLICT)).column(id_column)]
    ids = pa.chunked_array([c for s in sets for c in s.cast(pa.string()).chunks], pa.string()).combine_chunks()
    tag = np.repeat(np.array([STAGED, KEPT, CONFLICTING], np.int8), [len(s) for s in sets])
    h = hash_text(ids)
    order = np.argsort(h, kind="stable")
    table = pa.table({"hash": h[order], "id": ids.take(pa.array(order)), "set": tag[order]})
    with pa.OSFile(_ids_path(staging, block_index), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))
    return table.num_rows


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
        with pa.memory_map(_ids_path(staging, b)) as source:
            table = pa.ipc.open_file(source).read_all()
        h = table.column("hash").to_numpy()
        i = int(np.searchsorted(h, np.uint64(lo)))
        j = len(h) if hi is None else int(np.searchsorted(h, np.uint64(hi)))
        parts.append(table.slice(i, j - i).select(["id", "set"]))
    if not parts:
        return IdCounts()
    table = pa.concat_tables(parts)
    ids, tag = table.column("id"), table.column("set").to_numpy()

    def distinct(mask: np.ndarray) -> int:
        return int(pc.count_distinct(ids.filter(pa.array(mask)), mode="all").as_py())

    s, k, c = tag == STAGED, tag == KEPT, tag == CONFLICTING
    return IdCounts(staged_rows=int(s.sum()), kept_rows=int(k.sum()), conflict_rows=int(c.sum()),
                    staged=distinct(s), kept=distinct(k), conflicting=distinct(c), kept_or_conflicting=distinct(k | c),
                    any=distinct(np.ones(len(tag), bool)))


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
