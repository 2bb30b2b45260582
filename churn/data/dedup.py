"""The shuffle-free duplicate check of ingest.

Each block task stages its clean rows as an uncompressed Arrow IPC file (written and memory-
mapped back at the speed of a copy) and writes its sorted 64-bit id hashes; one task per hash
range reads that range from every block's key file and names the rows that repeat an earlier
(block, row) occurrence; then every block's staged rows, without those, are written once as
Parquet. (Writing Parquet in the block task and rewriting the blocks that hold repeats cost a
second Parquet read and write of nearly every block: repeats spread over all of them.) Rows with
equal hashes are compared by their id text, read from the memory-mapped staged files, before
one is dropped, so a hash collision never loses a customer. An id whose rows disagree on the
label is not a duplicate but a conflict: every row of it goes to the quarantine
(``conflicting_label``), with its values as parsed and its physical line (the staged rows carry
``_line``). The rows dropped are then counted apart from this module (:mod:`churn.data.distinct`).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from churn.config import TableSchema
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN
from churn.data.manifest import IngestError

LINE = "_line"  # the staged rows' physical line, for the quarantine; not written to the dataset
CONFLICT = "conflicting_label"  # the quarantine reason of every row of an id whose rows disagree on the label


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
                    ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per block, (rows whose key in [lo, hi) and id text repeat an earlier (block, row)
    occurrence with the same label, every row of an id whose rows disagree on the label).

    ``hi=None`` means up to the largest key. Only the sort touches every key; block, row, id and
    label are looked up for the few keys that occur more than once.
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
        return {}, {}
    key = np.concatenate(keys)
    starts = np.cumsum([0, *(len(k) for k in keys[:-1])])  # where each block's keys begin in ``key``
    # each block's keys are sorted already and the blocks come in order: a stable sort by key
    # merges those runs into (key, block, row) order, far cheaper than a lexsort of three columns
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    same_prev = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if not len(same_prev):
        return {}, {}
    shared = np.union1d(same_prev, same_prev + 1)  # sorted positions whose key occurs twice or more
    entry = order[shared]
    part = np.searchsorted(starts, entry, side="right") - 1  # which of ``keys`` each came from
    row = np.empty(len(entry), np.int64)
    ids = np.empty(len(entry), object)
    labels = np.empty(len(entry), np.int64)
    for p in np.unique(part):  # only these rows of the block's memory-mapped row and staged files are read
        pick = np.flatnonzero(part == p)
        row[pick] = rows[p][entry[pick] - starts[p]]
        taken = read_staged(staging, owners[p], [id_column, LABEL_COLUMN]).take(pa.array(row[pick]))
        ids[pick] = taken.column(id_column).to_pylist()
        labels[pick] = taken.column(LABEL_COLUMN).to_numpy()
    # in (key, block, row) order, a row repeats when an earlier one has its key *and* its id text:
    # a hash collision between distinct ids is never a duplicate
    frame = pd.DataFrame({"key": sorted_keys[shared], "id": ids, "label": labels})
    conflict = (frame.groupby(["key", "id"], sort=False)["label"].transform("nunique") > 1).to_numpy()
    repeat = frame.duplicated(["key", "id"]).to_numpy() & ~conflict
    owner = np.asarray(owners)[part]

    def per_block(mask: np.ndarray) -> dict[int, np.ndarray]:
        return {int(b): np.sort(row[mask & (owner == b)]) for b in np.unique(owner[mask])}

    return per_block(repeat), per_block(conflict)


def conflict_rows(rows: pa.Table, schema: TableSchema, source: str) -> pa.Table:
    """Staged clean rows as quarantine rows (reason ``conflicting_label``): every declared column as
    text, as parsed (numbers as pyarrow prints them, blanks empty, ignored columns null), the label
    as the CSV's text, with the file and physical line."""
    n = rows.num_rows
    text = {}
    for c in schema.columns:
        if c == schema.label:
            positive = rows.column(LABEL_COLUMN).to_numpy() == 1
            text[c] = pa.array(np.where(positive, schema.positive, schema.negative), pa.string())
        elif c not in rows.column_names:
            text[c] = pa.nulls(n, pa.string())
        elif c in schema.numeric:
            col = rows.column(c)
            text[c] = pc.if_else(pc.is_nan(col), "", col.cast(pa.string()))
        else:
            text[c] = pc.fill_null(rows.column(c).cast(pa.string()), "")
    text.update({"_reasons": pa.array([CONFLICT] * n, pa.string()), "_source": pa.array([source] * n, pa.string()),
                 "_line": rows.column(LINE).cast(pa.int64()), "_raw": pa.nulls(n, pa.string())})
    return pa.table(text)


def _replace(write, path: str, staging: str, block_index: int) -> None:
    """Write a partition file through a temporary one (never among the partitions), atomically."""
    tmp = os.path.join(staging, "keys", f"{os.path.basename(path)}.{block_index:05d}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


def write_partition(staging: str, block_index: int, drop: np.ndarray, conflicts: np.ndarray, schema: TableSchema,
                    staged_rows: int, source: str) -> tuple[int, int]:
    """Write one clean partition as Parquet: the block's staged rows (``staged_rows`` of them, as
    the block reported) without the row positions in ``drop`` and ``conflicts``; the rows in
    ``conflicts`` join the block's quarantine partition. Returns (rows dropped, rows quarantined).

    Idempotent, so that a task run again after its worker died gives the same files: the staged
    rows stay until the whole stage is done, a quarantine partition loses its earlier
    ``conflicting_label`` rows before they are added again, and each file replaces any earlier
    one atomically.
    """
    table = read_staged(staging, block_index)
    if table.num_rows != staged_rows:
        raise IngestError(f"{staged_path(staging, block_index)}: {table.num_rows} rows where the block "
                          f"wrote {staged_rows}")
    name = f"part-{block_index:05d}.parquet"
    if len(conflicts):
        path = os.path.join(staging, "quarantine", name)
        quarantine = pq.read_table(path)
        quarantine = quarantine.filter(pc.not_equal(quarantine.column("_reasons"), CONFLICT))
        added = conflict_rows(table.take(pa.array(conflicts)), schema, source).cast(quarantine.schema)
        quarantine = pa.concat_tables([quarantine, added])
        quarantine = quarantine.take(pc.sort_indices(quarantine, [("_line", "ascending")]))
        _replace(lambda tmp: pq.write_table(quarantine, tmp), path, staging, block_index)
    if len(drop) or len(conflicts):
        keep = np.ones(table.num_rows, bool)
        keep[drop] = False
        keep[conflicts] = False
        table = table.filter(pa.array(keep))
    table = table.drop_columns([LINE])
    _replace(lambda tmp: write_clean(table, tmp, schema), os.path.join(staging, "data", name), staging, block_index)
    return len(drop), len(conflicts)
