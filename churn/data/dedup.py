"""The shuffle-free duplicate check of ingest.

Each block task stages its clean rows as an uncompressed Arrow IPC file (written and memory-
mapped back at the speed of a copy) and writes its sorted 64-bit id hashes; one task per hash
range reads that range from every block's key file and names the rows that repeat an earlier
(block, row) occurrence; then every block's staged rows, without those, are written once as
Parquet. (Writing Parquet in the block task and rewriting the blocks that hold repeats cost a
second Parquet read and write of nearly every block: repeats spread over all of them.) Rows with
equal hashes are compared by their id text, read from the memory-mapped staged files, before
one is dropped, so a hash collision never loses a customer.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churn.config import TableSchema
from churn.data.columns import KEY_COLUMN
from churn.data.manifest import IngestError


def write_clean(table: pa.Table, path: str, schema: TableSchema) -> None:
    """One clean partition: dictionary pages for categoricals, no column statistics (faster)."""
    pq.write_table(table, path, use_dictionary=list(schema.categorical), write_statistics=False)


def staged_path(staging: str, block_index: int) -> str:
    """Where a block's clean rows wait (Arrow IPC) for the duplicate check."""
    return os.path.join(staging, "keys", f"{block_index:05d}-rows.arrow")


def stage_clean(table: pa.Table, staging: str, block_index: int) -> None:
    """Stage a block's clean rows as one uncompressed Arrow IPC record batch."""
    with pa.OSFile(staged_path(staging, block_index), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(1, table.num_rows))


def _key_file(staging: str, block_index: int, what: str) -> str:
    """A block's sorted id hashes (``what="keys"``) or the row each one belongs to (``"rows"``)."""
    return os.path.join(staging, "keys", f"{block_index:05d}-{what}.npy")


def stage_block(table: pa.Table, staging: str, block_index: int, key_bits: int) -> None:
    """Stage a block's clean rows for the duplicate check: the rows, their id hashes sorted and the
    row of each hash (a stable sort: equal hashes keep the rows' order)."""
    keys = dedup_keys(table.column(KEY_COLUMN).to_numpy(), key_bits)
    order = np.argsort(keys, kind="stable")
    np.save(_key_file(staging, block_index, "keys"), keys[order])
    np.save(_key_file(staging, block_index, "rows"), order.astype(np.uint32))
    stage_clean(table, staging, block_index)


def read_staged(staging: str, block_index: int, columns: list[str] | None = None) -> pa.Table:
    """A block's staged rows, memory-mapped (no copy)."""
    with pa.memory_map(staged_path(staging, block_index)) as source:
        table = pa.ipc.open_file(source).read_all()
    return table.select(columns) if columns else table


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


def find_duplicates(staging: str, blocks: list[int], lo: int, hi: int | None, id_column: str
                    ) -> dict[int, np.ndarray]:
    """Rows whose key in [lo, hi) and id text repeat an earlier (block, row) occurrence, per block.

    ``hi=None`` means up to the largest key. Only the sort touches every key; block and row are
    looked up for the few keys that occur more than once.
    """
    keys, rows, owners = [], [], []
    for b in blocks:
        k = np.load(_key_file(staging, b, "keys"), mmap_mode="r")
        i = int(np.searchsorted(k, np.uint64(lo)))
        j = len(k) if hi is None else int(np.searchsorted(k, np.uint64(hi)))
        if j > i:
            keys.append(np.asarray(k[i:j]))
            rows.append(np.load(_key_file(staging, b, "rows"), mmap_mode="r")[i:j])
            owners.append(b)
    if not keys:
        return {}
    key = np.concatenate(keys)
    starts = np.cumsum([0, *(len(k) for k in keys[:-1])])  # where each block's keys begin in ``key``
    # each block's keys are sorted already and the blocks come in order: a stable sort by key
    # merges those runs into (key, block, row) order, far cheaper than a lexsort of three columns
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    same_prev = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if not len(same_prev):
        return {}
    shared = np.union1d(same_prev, same_prev + 1)  # sorted positions whose key occurs twice or more
    entry = order[shared]
    part = np.searchsorted(starts, entry, side="right") - 1  # which of ``keys`` each came from
    row = np.empty(len(entry), np.int64)
    ids = np.empty(len(entry), object)
    for p in np.unique(part):  # only these rows of the block's memory-mapped row and staged files are read
        pick = np.flatnonzero(part == p)
        row[pick] = rows[p][entry[pick] - starts[p]]
        ids[pick] = read_staged(staging, owners[p], [id_column]).column(id_column).take(pa.array(row[pick])).to_pylist()
    # in (key, block, row) order, a row repeats when an earlier one has its key *and* its id text:
    # a hash collision between distinct ids is never a duplicate
    repeat = pd.DataFrame({"key": sorted_keys[shared], "id": ids}).duplicated().to_numpy()
    owner = np.asarray(owners)[part]
    return {int(b): np.sort(row[repeat & (owner == b)]) for b in np.unique(owner[repeat])}


def write_partition(staging: str, block_index: int, drop: np.ndarray, schema: TableSchema, staged_rows: int) -> int:
    """Write one clean partition as Parquet: the block's staged rows (``staged_rows`` of them, as
    the block reported) without the row positions in ``drop``; returns the rows dropped.

    Idempotent, so that a task run again after its worker died gives the same file: the staged
    rows stay until the whole stage is done, and the Parquet file replaces any earlier one
    atomically.
    """
    table = read_staged(staging, block_index)
    if table.num_rows != staged_rows:
        raise IngestError(f"{staged_path(staging, block_index)}: {table.num_rows} rows where the block "
                          f"wrote {staged_rows}")
    if len(drop):
        keep = np.ones(table.num_rows, bool)
        keep[drop] = False
        table = table.filter(pa.array(keep))
    path = os.path.join(staging, "data", f"part-{block_index:05d}.parquet")
    tmp = os.path.join(staging, "keys", f"part-{block_index:05d}.{os.getpid()}.parquet")  # never among the partitions
    write_clean(table, tmp, schema)
    os.replace(tmp, path)
    return len(drop)
