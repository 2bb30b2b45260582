"""The shuffle-free duplicate check of ingest.

Each block task writes its sorted 64-bit id hashes; one task per hash range reads that range
from every block's key file and names the rows that repeat an earlier (block, row)
occurrence; only the blocks holding such rows are rewritten. Rows with equal hashes are
compared by their id text before one is dropped, so a hash collision never loses a customer.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn.config import TableSchema
from churn.data.manifest import IngestError


def write_clean(table: pa.Table, path: str, schema: TableSchema) -> None:
    """One clean partition: dictionary pages for categoricals, no column statistics (faster)."""
    pq.write_table(table, path, use_dictionary=list(schema.categorical), write_statistics=False)


def hash_ranges(total_rows: int, min_buckets: int) -> list[tuple[int, int | None]]:
    """Key ranges [lo, hi) of the duplicate check: a power of two of them, ~4M rows each at most."""
    import math

    wanted = max(min_buckets, math.ceil(total_rows / 4_000_000))
    bits = max(0, math.ceil(math.log2(wanted)))
    shift = 64 - bits
    return [(b << shift, None if b == 2**bits - 1 else (b + 1) << shift) for b in range(2**bits)]


def dedup_keys(keys: np.ndarray, bits: int) -> np.ndarray:
    """The id hashes the duplicate check compares first: all 64 bits, or only the top ``bits``
    (``churn.ingest.dedup-key-bits``; tests shrink it to force collisions)."""
    keys = np.asarray(keys, dtype=np.uint64)
    if bits >= 64:
        return keys
    shift = np.uint64(64 - bits)
    return (keys >> shift) << shift


def repeated_rows(keys: np.ndarray, entries: np.ndarray, texts: Callable[[np.ndarray], list[str]],
                  order: np.ndarray | None = None) -> np.ndarray:
    """Per entry (given in priority order), True when an earlier entry has the same key *and*
    the same id text: a hash collision between distinct ids is never a duplicate.

    ``texts(entries[i...])`` returns the id texts; it is only asked for entries whose key repeats.
    ``order``, when given, is ``np.argsort(keys, kind="stable")`` already computed.
    """
    if order is None:
        order = np.argsort(keys, kind="stable")  # stable: equal keys stay in priority order
    sk = keys[order]
    same_prev = np.zeros(len(keys), bool)
    same_prev[1:] = sk[1:] == sk[:-1]
    shared = same_prev.copy()
    shared[:-1] |= same_prev[1:]
    out = np.zeros(len(keys), bool)
    cand = order[shared]
    if len(cand):
        frame = pd.DataFrame({"k": keys[cand], "t": list(texts(entries[cand]))})
        out[cand[frame.duplicated(["k", "t"]).to_numpy()]] = True
    return out


def find_duplicates(staging: str, blocks: list[int], lo: int, hi: int | None, id_column: str
                    ) -> dict[int, np.ndarray]:
    """Rows whose key in [lo, hi) and id text repeat an earlier (block, row) occurrence, per block.

    ``hi=None`` means up to the largest key.
    """
    keys, owners, rows = [], [], []
    for b in blocks:
        k = np.load(os.path.join(staging, "keys", f"{b:05d}-keys.npy"), mmap_mode="r")
        i = int(np.searchsorted(k, np.uint64(lo)))
        j = len(k) if hi is None else int(np.searchsorted(k, np.uint64(hi)))
        if j > i:
            keys.append(np.asarray(k[i:j]))
            rows.append(np.load(os.path.join(staging, "keys", f"{b:05d}-rows.npy"), mmap_mode="r")[i:j])
            owners.append(np.full(j - i, b, dtype=np.int64))
    if not keys:
        return {}
    key = np.concatenate(keys)
    owner = np.concatenate(owners)
    row = np.concatenate(rows).astype(np.int64)
    # each block's keys are sorted already and the blocks come in order: a stable sort by key
    # merges those runs into (key, block, row) order, far cheaper than a lexsort of three columns
    order = np.argsort(key, kind="stable")
    key, owner, row = key[order], owner[order], row[order]

    def texts(entries: np.ndarray) -> list[str]:
        out: list[str] = [""] * len(entries)
        for b in np.unique(owner[entries]):
            pick = np.flatnonzero(owner[entries] == b)
            ids = pq.read_table(os.path.join(staging, "data", f"part-{b:05d}.parquet"), columns=[id_column])
            for i, text in zip(pick, ids.column(id_column).take(pa.array(row[entries[pick]])).to_pylist(),
                               strict=True):
                out[i] = text
        return out

    repeat = repeated_rows(key, np.arange(len(key)), texts, order=np.arange(len(key)))
    return {int(b): np.sort(row[repeat & (owner == b)]) for b in np.unique(owner[repeat])}


def drop_rows(staging: str, block_index: int, rows: np.ndarray, schema: TableSchema, written_rows: int) -> int:
    """Rewrite one clean partition (``written_rows`` rows as its block wrote it) without the given
    row positions.

    Idempotent, so that a task run again after its worker died drops nothing twice: the new file
    replaces the old one atomically, and a partition that already has the dropped row count is
    left as it is.
    """
    path = os.path.join(staging, "data", f"part-{block_index:05d}.parquet")
    table = pq.read_table(path)
    if table.num_rows == written_rows - len(rows):
        return len(rows)  # done by an earlier attempt of this task
    if table.num_rows != written_rows:
        raise IngestError(f"{path}: {table.num_rows} rows where the block wrote {written_rows}")
    keep = np.ones(table.num_rows, bool)
    keep[rows] = False
    # written beside the key files (a folder removed before publishing), never among the partitions
    tmp = os.path.join(staging, "keys", f"part-{block_index:05d}.{os.getpid()}.parquet")
    write_clean(table.filter(pa.array(keep)), tmp, schema)
    os.replace(tmp, path)
    return int((~keep).sum())
