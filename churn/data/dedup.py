"""The shuffle-free duplicate check of ingest.

Each block task writes its sorted 64-bit id hashes; one task per hash range reads that range
from every block's key file and names the rows that repeat an earlier (block, row)
occurrence; only the blocks holding such rows are rewritten.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from churn.config import TableSchema


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


def find_duplicates(staging: str, blocks: list[int], lo: int, hi: int | None) -> dict[int, np.ndarray]:
    """Rows whose key in [lo, hi) repeats an earlier (block, row) occurrence, per block.

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
    order = np.lexsort((row, owner, key))
    key, owner, row = key[order], owner[order], row[order]
    repeat = np.zeros(len(key), bool)
    repeat[1:] = key[1:] == key[:-1]
    out: dict[int, np.ndarray] = {}
    for b in np.unique(owner[repeat]):
        out[int(b)] = np.sort(row[repeat & (owner == b)])
    return out


def drop_rows(staging: str, block_index: int, rows: np.ndarray, schema: TableSchema) -> int:
    """Rewrite one clean partition without the given row positions."""
    path = os.path.join(staging, "data", f"part-{block_index:05d}.parquet")
    table = pq.read_table(path)
    keep = np.ones(table.num_rows, bool)
    keep[rows] = False
    write_clean(table.filter(pa.array(keep)), path, schema)
    return int((~keep).sum())
