"""Ingest: CSV files → validated, deduplicated, partitioned Parquet dataset, on the cluster.

Stages (each a set of Dask tasks; the driver only sees counts and small index arrays):

1. header check of every file (schema drift fails here, before any data is read);
2. one sequential scan per file: size, sha256, first line number of every block;
3. one task per block: parse (pyarrow; numbers typed, categoricals dictionary-encoded),
   validate, write the quarantined rows as Parquet and, with an id column, stage the clean rows
   (Arrow IPC) with their sorted row keys for the duplicate check (without one, the clean rows
   are written as Parquet there and then);
4. a shuffle-free duplicate check: one task per hash bucket reads its key range from every
   block's key file and names the rows that repeat an earlier row's id (in the same block or an
   earlier one) and the ids whose rows disagree on the label; then one task per block
   writes its staged rows, without those, as Parquet (the conflicting rows to the quarantine);
   then the distinct ids are counted back from the files (:mod:`churn.data.distinct`);
5. the files must be as they were when scanned, the manifest is checked (read = kept +
   quarantined + duplicates, kept = distinct ids kept) and the finished dataset is published by
   one atomic rename. A dataset whose inputs, schema, parse options and format version are
   unchanged is reused.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.utils import parse_bytes
from distributed import Client
from fsspec.implementations.local import LocalFileSystem

from churn.config import ConfigError, JobSpec, MonitorSpec, ScoreSpec, TableSchema, setting
from churn.data.blocks import Block, FileScan, NotTextError, read_block_rows, read_header, scan_file
from churn.data.dedup import (
    CONFLICT,
    LINE,
    find_duplicates,
    hash_ranges,
    stage_block,
    write_clean,
    write_partition,
)
from churn.data.distinct import IdCounts, count_range, measured_duplicates, stage_ids
from churn.data.folders import unwritable_reason
from churn.data.manifest import FORMAT_VERSION, BlockResult, FileEntry, IngestError, Manifest, WrittenRows
from churn.data.parse import count_lines, parse_block
from churn.data.partitions import map_blocks
from churn.data.publish import hold, hold_staging, new_staging, publish, release, remove_abandoned
from churn.data.validate import reason_counts

log = logging.getLogger(__name__)

class SchemaDriftError(ValueError):
    """A source file's header does not match the declared schema."""


@dataclass
class Dataset:
    """A published dataset: its name (``root``, the link), and the version folder it named when this
    process took it (``version``: its clean rows and quarantine, held while the process runs)."""

    root: Path
    manifest: Manifest
    reused: bool = False
    version: Path | None = None

    @property
    def data_path(self) -> Path:
        return (self.version or self.root) / "data"

    @property
    def quarantine_path(self) -> Path:
        return (self.version or self.root) / "quarantine"


# --------------------------------------------------------------------------- checks
def check_headers(paths: list[str], schema: TableSchema, encoding: str = "utf-8", *, require_label: bool = True
                  ) -> dict[str, list[str]]:
    """Refuse any file that is not CSV text, or whose header lacks a declared column or has an
    undeclared one.

    Returns each file's header (column order can differ between files).
    """
    expected = schema.columns if require_label else [c for c in schema.columns if c != schema.label]
    problems = []
    headers = {}
    for path in paths:
        try:
            header = headers[path] = read_header(path, encoding)
        except NotTextError as exc:
            problems.append(f"{path}: {exc}")
            continue
        missing = [c for c in expected if c not in header]
        extra = [c for c in header if c not in schema.columns]
        if missing:
            problems.append(f"{path}: missing column(s) {', '.join(missing)}")
        if extra:
            problems.append(f"{path}: unexpected column(s) {', '.join(extra)} "
                            "(declare them in the schema, or under schema.ignore)")
    if problems:
        raise SchemaDriftError("schema drift, nothing was read:\n  " + "\n  ".join(problems))
    return headers


# --------------------------------------------------------------------------- per block
def rejected_rows(rejected: list[tuple[int, str, str]], schema: TableSchema, source: str) -> pa.Table:
    """Lines that never became fields (wrong field count, stray quote, bad encoding), as quarantine rows."""
    rows = {c: pa.nulls(len(rejected), pa.string()) for c in schema.columns}
    rows.update({"_reasons": pa.array([r for _, r, _ in rejected], pa.string()),
                 "_source": pa.array([source] * len(rejected), pa.string()),
                 "_line": pa.array([n for n, _, _ in rejected], pa.int64()),
                 "_raw": pa.array([t for _, _, t in rejected], pa.string())})
    return pa.table(rows)


def ingest_block(block: Block, schema: TableSchema, staging: str, encoding: str, key_bits: int) -> BlockResult:
    """Parse and validate one block; write its quarantined rows, and its clean rows (with an id
    column: stage them for the duplicate check); returns its counts (lines counted from the bytes)."""
    data, first_line = read_block_rows(block)
    lines = count_lines(data)
    try:
        parsed = parse_block(data, list(block.header), first_line, schema, block.path, encoding, lines=lines)
    except pa.ArrowInvalid as exc:
        raise IngestError(f"{block.path}: cannot parse the CSV lines {first_line}..{first_line + lines - 1}: "
                          f"{exc}") from None
    del data
    clean = pa.concat_tables(parsed.clean).combine_chunks()
    quarantine = pa.concat_tables(parsed.quarantine)
    quarantine = quarantine.append_column("_raw", pa.nulls(quarantine.num_rows, pa.string()))
    if parsed.rejected:
        quarantine = pa.concat_tables([quarantine, rejected_rows(parsed.rejected, schema, block.path)])
        quarantine = quarantine.take(pc.sort_indices(quarantine, [("_line", "ascending")]))
    name = f"part-{block.index:05d}.parquet"
    if schema.id:  # written as Parquet once the repeated ids (inside the block or across blocks) are known
        lines_of = pa.array(np.concatenate(parsed.clean_lines), pa.int64())  # for rows quarantined later
        stage_block(clean.append_column(LINE, lines_of), staging, block.index, key_bits)
    else:
        write_clean(clean, os.path.join(staging, "data", name), schema)
    pq.write_table(quarantine, os.path.join(staging, "quarantine", name))
    result = BlockResult(index=block.index, source=block.path, lines=lines, rows_read=parsed.records,
                         embedded_newlines=parsed.embedded_newlines, rows_clean=clean.num_rows,
                         rows_quarantined=quarantine.num_rows,
                         reasons=dict(reason_counts(quarantine.column("_reasons").to_pylist())))
    del clean, quarantine
    pa.default_memory_pool().release_unused()  # hand Arrow's freed blocks back to the OS between blocks
    return result


# --------------------------------------------------------------------------- the stage
def parse_options(job: JobSpec, blocksize: int) -> dict[str, object]:
    """Every option that changes what is parsed or how it is cut into partitions: the encoding (by
    its codec's name: ``UTF8`` is ``utf-8``), the block size in bytes, and every ``churn.ingest``
    setting (so that a new parse setting joins the key without being listed here; one that
    changes nothing, such as the duplicate check's buckets, costs a rebuild, never a stale reuse)."""
    return {"encoding": codecs.lookup(job.data.encoding).name, "blocksize": blocksize,
            "settings": setting("ingest")}


def dataset_key(scans: list[FileScan], schema: TableSchema, options: dict[str, object]) -> str:
    """The dataset's name: its inputs' names, sizes and digests, the schema, the parse options and
    the format version."""
    payload = {
        "version": FORMAT_VERSION,
        "files": [(os.path.basename(s.path), s.size, s.sha256) for s in scans],
        "schema": schema.model_dump(mode="json"),
        "options": options,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_stamps(paths: list[str]) -> dict[str, tuple[str, ...]]:
    """Size and modification time of each file (local files: in ns, with the inode), to tell a file
    rewritten while it was read. (The time's granularity is the file system's clock tick, a few ms:
    a rewrite of the same size within one tick of the last write goes unseen.)"""
    stamps = {}
    for path in paths:
        fs, p = fsspec.core.url_to_fs(path)
        if isinstance(fs, LocalFileSystem):
            st = os.stat(p)
            stamps[path] = (str(st.st_size), str(st.st_mtime_ns), str(st.st_ino))
        else:
            info = fs.info(p)
            stamps[path] = tuple(str(info.get(k)) for k in ("size", "mtime", "LastModified", "ETag", "updated"))
    return stamps


def check_unchanged(before: dict[str, tuple[str, ...]]) -> None:
    """Every file still has the size and time it had before it was read; else IngestError naming it."""
    after = file_stamps(list(before))
    changed = [p for p in before if after[p] != before[p]]
    if changed:
        raise IngestError(f"{changed[0]}: changed while it was read (size or modification time differ before and "
                          f"after{f'; {len(changed) - 1} more file(s) too' if len(changed) > 1 else ''}); nothing "
                          "was published")


def plan_blocks(scans: list[FileScan], headers: dict[str, list[str]]) -> list[Block]:
    """One block per record-aligned byte range the scans found."""
    blocks = []
    for fi, scan in enumerate(scans):
        ends = [*scan.offsets[1:], scan.size]
        for off, end, first in zip(scan.offsets, ends, scan.first_lines, strict=True):
            blocks.append(Block(path=scan.path, file_index=fi, index=len(blocks), offset=off,
                                length=end - off, first_line=first, header=tuple(headers[scan.path])))
    return blocks


def resolve_blocksize(job: JobSpec | ScoreSpec | MonitorSpec) -> int:
    """``data.blocksize`` of the job, else the ``churn.ingest.blocksize`` setting, in bytes."""
    return int(parse_bytes(job.data.blocksize or setting("ingest.blocksize")))


MIN_BLOCK = 4 << 20  # smaller blocks cost more in per-task overhead than they gain in balance


def balanced_blocksize(job: ScoreSpec | MonitorSpec, paths: list[str], workers: int) -> int:
    """For reading a batch (scoring, monitoring): ``data.blocksize`` when the job sets it; else the
    ingest block size, shrunk (down to 4 MiB) so there are at least 4 blocks per worker: with 9
    blocks on 2 workers, one worker reads a fifth block while the other idles."""
    if job.data.blocksize is not None:
        return resolve_blocksize(job)
    total = 0
    for path in paths:
        fs, p = fsspec.core.url_to_fs(path)
        total += int(fs.size(p))
    return max(MIN_BLOCK, min(resolve_blocksize(job), -(-total // (4 * max(workers, 1)))))


def scan_blocks(paths: list[str], headers: dict[str, list[str]], blocksize: int, client: Client
                ) -> tuple[list[FileScan], list[Block]]:
    """Scan every file on the cluster (one task per file) and plan its record-aligned blocks."""
    scans: list[FileScan] = client.gather(client.map(scan_file, paths, blocksize=blocksize, pure=False))
    return scans, plan_blocks(scans, headers)


def ingest(job: JobSpec, client: Client, *, force: bool = False) -> Dataset:
    """Run the ingest stage of ``job`` on ``client``'s cluster; return the published dataset."""
    schema = job.table
    paths = job.data.paths()
    headers = check_headers(paths, schema, job.data.encoding)
    blocksize = resolve_blocksize(job)
    out_root = Path(job.data.output).resolve()
    out_root.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    stages: dict[str, float] = {}
    stamps = file_stamps(paths)
    scans, blocks = scan_blocks(paths, headers, blocksize, client)
    stages["scan"] = time.perf_counter() - t0
    key = dataset_key(scans, schema, parse_options(job, blocksize))
    final = out_root / f"dataset-{key}"
    if (final / "manifest.json").is_file() and not force:
        check_unchanged(stamps)  # the digests in the key are of the bytes the files hold now
        version = hold(final)
        manifest = Manifest.read(version / "manifest.json")
        manifest.check_budget(job.data.max_bad_fraction)  # this job's budget, not the one it was built with
        log.info("ingest: inputs unchanged, reusing %s", final)
        return Dataset(final, manifest, reused=True, version=version)

    remove_abandoned(out_root)
    staging = new_staging(out_root, key)
    hold_staging(staging)
    for sub in ("data", "quarantine", "keys"):
        (staging / sub).mkdir()
    try:
        log.info("ingest: %d file(s), %d block(s) of %s", len(scans), len(blocks), f"{blocksize:,} B")
        key_bits = int(setting("ingest.dedup-key-bits"))
        results: list[BlockResult] = map_blocks(client, "ingest", ingest_block, blocks, schema=schema,
                                                staging=str(staging), encoding=job.data.encoding, key_bits=key_bits)
        stages["blocks"] = time.perf_counter() - t0 - sum(stages.values())

        dropped, distinct = 0, None
        if schema.id:
            dropped, distinct = remove_repeats(client, staging, blocks, results, schema, stages, t0)
        shutil.rmtree(staging / "keys")

        manifest = Manifest.from_blocks(
            dataset=key, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            files=[FileEntry(s.path, s.size, s.sha256, s.lines) for s in scans], blocksize=blocksize,
            results=results, written=count_written(staging, [b.index for b in blocks]),
            duplicates_removed=dropped, id_column=schema.id, seconds=time.perf_counter() - t0,
            kept_distinct_ids=distinct)
        manifest.check(job.data.max_bad_fraction)
        stages["manifest"] = time.perf_counter() - t0 - sum(stages.values())
        manifest.stage_seconds = {k: round(v, 3) for k, v in stages.items()}
        check_unchanged(stamps)  # every block read the bytes the scan hashed
        manifest.write(staging / "manifest.json")
        published = publish(staging, final, force=force)
        version = hold(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        release(staging)
    if not published:  # a concurrent run published the same inputs first: use theirs
        log.info("ingest: %s was published by another run meanwhile; using it", final)
        return Dataset(final, Manifest.read(version / "manifest.json"), reused=True, version=version)
    log.info("ingest: %d read, %d kept, %d quarantined, %d duplicates → %s", manifest.rows_read,
             manifest.rows_kept, manifest.rows_quarantined, manifest.duplicates_removed, final)
    return Dataset(final, manifest, version=version)


def remove_repeats(client: Client, staging: Path, blocks: list[Block], results: list[BlockResult],
                   schema: TableSchema, stages: dict[str, float], t0: float) -> tuple[int, int]:
    """Find the rows repeating an earlier row's id (in the same block or an earlier one) and the ids
    whose rows disagree on the label, then write every block's staged rows without them as Parquet
    (the conflicting rows join the block's quarantine, counted in ``results``). Returns the
    duplicates and the distinct ids kept, both as counted over the files written."""
    assert schema.id
    total = sum(r.rows_clean for r in results)
    ranges = hash_ranges(total, int(setting("ingest.dedup-buckets")))
    idx = [b.index for b in blocks]
    found = client.gather([client.submit(find_duplicates, str(staging), idx, lo, hi, schema.id, pure=False)
                           for lo, hi in ranges])
    stages["duplicates"] = time.perf_counter() - t0 - sum(stages.values())
    drops, conflicts = ({b: np.sort(np.concatenate([f[which][b] for f in found if b in f[which]]))
                         for b in {b for f in found for b in f[which]}} for which in (0, 1))
    none = np.zeros(0, np.int64)
    n = len(results)
    written = client.gather(client.map(
        write_partition, [str(staging)] * n, [r.index for r in results], [drops.get(r.index, none) for r in results],
        [conflicts.get(r.index, none) for r in results], [schema] * n, [r.rows_clean for r in results],
        [r.source for r in results], pure=False))
    for r, (_, quarantined) in zip(results, written, strict=True):
        if quarantined:
            r.rows_quarantined += quarantined
            r.reasons[CONFLICT] = quarantined
    dropped = sum(d for d, _ in written)
    stages["write"] = time.perf_counter() - t0 - sum(stages.values())
    # the measured side: distinct ids counted back from the files, apart from the choice above
    client.gather(client.map(stage_ids, [str(staging)] * n, idx, [schema.id] * n, pure=False))
    counts = sum(client.gather([client.submit(count_range, str(staging), idx, lo, hi, pure=False)
                                for lo, hi in hash_ranges(2 * total, int(setting("ingest.dedup-buckets")))]),
                 IdCounts())
    duplicates = measured_duplicates(counts, dropped)
    stages["count"] = time.perf_counter() - t0 - sum(stages.values())
    log.info("ingest: %d repeated ids, in %d partition(s); %d rows of %d ids with conflicting labels quarantined",
             duplicates, len(drops), counts.conflict_rows, counts.conflicting)
    return duplicates, counts.kept


def count_written(staging: Path, blocks: list[int]) -> WrittenRows:
    """Rows in the staged clean and quarantine files, from their Parquet metadata; a missing
    partition file is an error naming it."""
    counts = {}
    for sub in ("data", "quarantine"):
        names = [f"part-{i:05d}.parquet" for i in blocks]
        missing = [n for n in names if not (staging / sub / n).is_file()]
        if missing:
            raise IngestError(f"{sub} partition file(s) missing after writing: {', '.join(missing[:5])}; "
                              "nothing was published")
        counts[sub] = sum(pq.read_metadata(staging / sub / n).num_rows for n in names)
    return WrittenRows(clean=counts["data"], quarantined=counts["quarantine"])


def check_output_folder(job: JobSpec | ScoreSpec) -> None:
    """``data.output`` exists or can be made, and a file can be written there; else ConfigError."""
    folder = Path(job.data.output)
    reason = unwritable_reason(folder)
    if reason:
        raise ConfigError(f"data.output: cannot write to {folder}: {reason}")
