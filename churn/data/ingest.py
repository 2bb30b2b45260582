"""Ingest: CSV files → validated, deduplicated, partitioned Parquet dataset, on the cluster.

Stages (each a set of Dask tasks; the driver only sees counts and small index arrays):

1. header check of every file (schema drift fails here, before any data is read);
2. one sequential scan per file: size, sha256, first line number of every block;
3. one task per block: parse (pyarrow, every field as text), validate, write the clean rows
   and the quarantined rows as Parquet, and the sorted row keys for the duplicate check;
4. a shuffle-free duplicate check: one task per hash bucket reads its key range from every
   block's key file and names the rows that repeat an earlier id; only the blocks holding
   such rows are rewritten;
5. the manifest is checked (read = kept + quarantined + duplicates) and the finished dataset
   is published by one atomic rename. A dataset whose inputs, schema and code version are
   unchanged is reused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from dask.utils import parse_bytes
from distributed import Client

from churn.config import ConfigError, JobSpec, TableSchema, setting
from churn.data.blocks import Block, FileScan, block_offsets, read_block_bytes, read_header, scan_file
from churn.data.columns import KEY_COLUMN
from churn.data.dedup import drop_rows, find_duplicates, hash_ranges, write_clean
from churn.data.folders import unwritable_reason
from churn.data.manifest import FORMAT_VERSION, BlockResult, FileEntry, IngestError, Manifest
from churn.data.validate import reason_counts, validate_table

log = logging.getLogger(__name__)

_DICT = pa.dictionary(pa.int32(), pa.string())

class SchemaDriftError(ValueError):
    """A source file's header does not match the declared schema."""


@dataclass
class Dataset:
    """A published dataset: where its clean rows, quarantine and manifest live."""

    root: Path
    manifest: Manifest
    reused: bool = False

    @property
    def data_path(self) -> Path:
        return self.root / "data"

    @property
    def quarantine_path(self) -> Path:
        return self.root / "quarantine"


# --------------------------------------------------------------------------- checks
def check_headers(paths: list[str], schema: TableSchema) -> dict[str, list[str]]:
    """Refuse any file whose header lacks a declared column or has an undeclared one.

    Returns each file's header (column order can differ between files).
    """
    expected = schema.columns
    problems = []
    headers = {}
    for path in paths:
        header = headers[path] = read_header(path)
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in expected]
        if missing:
            problems.append(f"{path}: missing column(s) {', '.join(missing)}")
        if extra:
            problems.append(f"{path}: unexpected column(s) {', '.join(extra)} "
                            "(declare them in the schema, or under schema.ignore)")
    if problems:
        raise SchemaDriftError("schema drift, nothing was read:\n  " + "\n  ".join(problems))
    return headers


# --------------------------------------------------------------------------- per block
def _parse(data: bytes, header: list[str], first_line: int, skip_header: bool, levels: set[str] = frozenset()
           ) -> tuple[pa.Table, np.ndarray, list[tuple[int, str]]]:
    """Parse CSV bytes, every field as text (``levels`` columns dictionary-encoded while
    parsing); malformed lines are returned, not raised."""
    bad: list[tuple[int, str]] = []

    def on_invalid(row: Any) -> str:
        bad.append((row.number, row.text))
        return "skip"

    if not data:
        return pa.table({c: pa.array([], pa.string()) for c in header}), np.zeros(0, np.int64), bad
    table = pacsv.read_csv(
        pa.py_buffer(data),
        read_options=pacsv.ReadOptions(column_names=header, skip_rows=1 if skip_header else 0,
                                       use_threads=False, block_size=max(1 << 20, len(data) + 1)),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={c: _DICT if c in levels else pa.string() for c in header},
                                             strings_can_be_null=False, quoted_strings_can_be_null=False),
    )
    # physical line numbers: pyarrow numbers lines from 1 within the buffer (header included)
    offset = first_line - 1
    bad = [(offset + num, text) for num, text in bad]
    bad_local = {num - offset for num, _ in bad}
    total = table.num_rows + len(bad)
    local = np.arange(1 + int(skip_header), 1 + int(skip_header) + total, dtype=np.int64)
    if bad_local:
        local = local[~np.isin(local, np.fromiter(bad_local, np.int64))]
    return table, local + offset, bad


def ingest_block(block: Block, schema: TableSchema, staging: str) -> BlockResult:
    """Parse, validate and write one block; returns its counts."""
    data = read_block_bytes(block)
    try:
        table, lines, bad = _parse(data, list(block.header), block.first_line if block.offset else 1,
                                   skip_header=block.offset == 0, levels={*schema.categorical, schema.label})
    except pa.ArrowInvalid as exc:  # e.g. bytes that are not UTF-8: the whole block is unreadable
        raise IngestError(f"{block.path}: cannot parse the CSV lines from line {block.first_line or 1} "
                          f"(bytes {block.offset}..{block.offset + block.length}): {exc}") from None
    del data
    clean, quarantine = validate_table(table, schema, block.path, lines)
    quarantine = quarantine.append_column("_raw", pa.nulls(quarantine.num_rows, pa.string()))
    if bad:
        malformed = {c: pa.nulls(len(bad), pa.string()) for c in schema.columns}
        malformed.update({"_reasons": pa.array(["wrong_field_count"] * len(bad), pa.string()),
                          "_source": pa.array([block.path] * len(bad), pa.string()),
                          "_line": pa.array([n for n, _ in bad], pa.int64()),
                          "_raw": pa.array([t for _, t in bad], pa.string())})
        quarantine = pa.concat_tables([quarantine, pa.table(malformed)])
        quarantine = quarantine.take(pc.sort_indices(quarantine, [("_line", "ascending")]))
    name = f"part-{block.index:05d}.parquet"
    duplicates = 0
    if schema.id:
        # repeats inside the block go now (first kept); repeats across blocks in a later pass
        keys = clean.column(KEY_COLUMN).to_numpy()
        order = np.argsort(keys, kind="stable")
        repeat = np.zeros(len(keys), bool)
        repeat[1:] = keys[order][1:] == keys[order][:-1]
        if repeat.any():
            keep = np.ones(len(keys), bool)
            keep[order[repeat]] = False
            duplicates = int(repeat.sum())
            clean = clean.filter(pa.array(keep))
            keys = keys[keep]
            order = (np.cumsum(keep) - 1)[order[~repeat]]  # the sort order, renumbered: no re-sort
        np.save(os.path.join(staging, "keys", f"{block.index:05d}-keys.npy"), keys[order])
        np.save(os.path.join(staging, "keys", f"{block.index:05d}-rows.npy"), order.astype(np.uint32))
    write_clean(clean, os.path.join(staging, "data", name), schema)
    n_clean = clean.num_rows
    pq.write_table(quarantine, os.path.join(staging, "quarantine", name))
    rows_read = table.num_rows + len(bad)
    del table, clean
    pa.default_memory_pool().release_unused()  # hand Arrow's freed blocks back to the OS between blocks
    return BlockResult(index=block.index, source=block.path, rows_read=rows_read,
                       rows_clean=n_clean, rows_quarantined=quarantine.num_rows,
                       reasons=dict(reason_counts(quarantine.column("_reasons").to_pylist())), duplicates=duplicates)


# --------------------------------------------------------------------------- the stage
def dataset_key(scans: list[FileScan], schema: TableSchema) -> str:
    payload = {
        "version": FORMAT_VERSION,
        "files": [(os.path.basename(s.path), s.size, s.sha256) for s in scans],
        "schema": schema.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _blocks(scans: list[FileScan], headers: dict[str, list[str]], blocksize: int) -> list[Block]:
    blocks = []
    for fi, scan in enumerate(scans):
        for off, first in zip(block_offsets(scan.size, blocksize), scan.first_lines, strict=True):
            blocks.append(Block(path=scan.path, file_index=fi, index=len(blocks), offset=off,
                                length=blocksize, first_line=first, header=tuple(headers[scan.path])))
    return blocks


def resolve_blocksize(job: JobSpec) -> int:
    """``data.blocksize`` of the job, else the ``churn.ingest.blocksize`` setting, in bytes."""
    return int(parse_bytes(job.data.blocksize or setting("ingest.blocksize")))


def ingest(job: JobSpec, client: Client, *, force: bool = False) -> Dataset:
    """Run the ingest stage of ``job`` on ``client``'s cluster; return the published dataset."""
    schema = job.table
    paths = job.data.paths()
    headers = check_headers(paths, schema)
    blocksize = resolve_blocksize(job)
    out_root = Path(job.data.output).resolve()
    out_root.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    scans: list[FileScan] = client.gather(client.map(scan_file, paths, blocksize=blocksize, pure=False))
    key = dataset_key(scans, schema)
    final = out_root / f"dataset-{key}"
    if (final / "manifest.json").is_file() and not force:
        manifest = Manifest.read(final / "manifest.json")
        manifest.check_budget(job.data.max_bad_fraction)  # this job's budget, not the one it was built with
        log.info("ingest: inputs unchanged, reusing %s", final)
        return Dataset(final, manifest, reused=True)

    _remove_abandoned_staging(out_root)
    staging = out_root / f".staging-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    for sub in ("data", "quarantine", "keys"):
        (staging / sub).mkdir(parents=True)
    try:
        blocks = _blocks(scans, headers, blocksize)
        log.info("ingest: %d file(s), %d block(s) of %s", len(scans), len(blocks), f"{blocksize:,} B")
        futures = client.map(ingest_block, blocks, schema=schema, staging=str(staging), pure=False)
        results: list[BlockResult] = client.gather(futures)
        del futures

        dropped = 0  # repeats across blocks (repeats inside a block went in ingest_block)
        if schema.id:
            ranges = hash_ranges(sum(r.rows_clean for r in results), int(setting("ingest.dedup-buckets")))
            idx = [b.index for b in blocks]
            found = client.gather([client.submit(find_duplicates, str(staging), idx, lo, hi, pure=False)
                                   for lo, hi in ranges])
            per_block: dict[int, list[np.ndarray]] = {}
            for part in found:
                for b, rows in part.items():
                    per_block.setdefault(b, []).append(rows)
            drops = [client.submit(drop_rows, str(staging), b, np.sort(np.concatenate(r)), schema, pure=False)
                     for b, r in sorted(per_block.items())]
            dropped = int(sum(client.gather(drops)))
        shutil.rmtree(staging / "keys")

        manifest = Manifest.from_blocks(
            dataset=key, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            files=[FileEntry(s.path, s.size, s.sha256, s.lines) for s in scans], blocksize=blocksize,
            results=results, dropped_across_blocks=dropped, id_column=schema.id, seconds=time.perf_counter() - t0)
        manifest.check(job.data.max_bad_fraction)
        manifest.write(staging / "manifest.json")
        if final.exists():  # a forced rerun replaces the old dataset
            shutil.rmtree(final)
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("ingest: %d read, %d kept, %d quarantined, %d duplicates → %s", manifest.rows_read,
             manifest.rows_kept, manifest.rows_quarantined, manifest.duplicates_removed, final)
    return Dataset(final, manifest)


def _remove_abandoned_staging(out_root: Path) -> None:
    """Delete staging folders left by ingests whose process is gone (crashed or killed)."""
    for path in out_root.glob(".staging-*"):
        try:
            pid = int(path.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("ingest: removing abandoned %s", path.name)
            shutil.rmtree(path, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def check_output_folder(job: JobSpec) -> None:
    """``data.output`` exists or can be made, and a file can be written there; else ConfigError."""
    folder = Path(job.data.output)
    reason = unwritable_reason(folder)
    if reason:
        raise ConfigError(f"data.output: cannot write to {folder}: {reason}")
