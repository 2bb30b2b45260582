"""Ingest under faults: counts that can fail, no silent drops, safe publishing, any encoding."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.config
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import churn.data.ingest as ingest_module
from churn.data import distinct
from churn.data.blocks import scan_file
from churn.data.dedup import stage_clean, write_partition
from churn.data.generate import generate
from churn.data.ingest import (
    SchemaDriftError,
    check_headers,
    count_written,
    dataset_key,
    ingest,
    ingest_block,
    parse_options,
    plan_blocks,
    resolve_blocksize,
)
from churn.data.manifest import IngestError, Manifest
from churn.data.parse import parse_block
from churn.data.publish import release, remove_abandoned
from tests.conftest import ROOT, TELCO, job_spec

INGEST_JOB = ROOT / "jobs" / "ingest.yaml"


@pytest.fixture(scope="module")
def dirty_source(tmp_path_factory) -> Path:
    """12,000 generated rows over 2 files with 3 % known faults (duplicates among them)."""
    out = tmp_path_factory.mktemp("dirty-faults")
    generate(out, rows=12_000, files=2, seed=21, dirty=0.03)
    return out


def test_a_stray_quote_in_telco_costs_one_row(client, tmp_path):
    """Line 51 opens a quote that never closes: 7,042 rows kept, line 51 quarantined as unbalanced_quote."""
    lines = TELCO.read_text().split("\n")
    lines[50] = lines[50].replace(",Female,", ',"Female,', 1).replace(",Male,", ',"Male,', 1)
    src = tmp_path / "stray.csv"
    src.write_text("\n".join(lines))
    ds = ingest(job_spec(tmp_path, src, "data.max_bad_fraction=0.05"), client)
    man = ds.manifest
    assert (man.rows_read, man.rows_kept, man.rows_quarantined) == (7043, 7042, 1)
    assert man.quarantined_by_reason == {"unbalanced_quote": 1}
    quarantine = pd.read_parquet(ds.quarantine_path)
    assert quarantine["_line"].tolist() == [51]
    assert quarantine["_raw"].tolist() == [lines[50]]


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress),
                                              (".xz", lzma.compress),
                                              (".zst", lambda b: zstandard.ZstdCompressor().compress(b))])
def test_compressed_sources_ingest_like_the_plain_file(client, tmp_path, suffix, compress):
    """gzip, bz2, xz and zstd files give the same rows as the plain CSV, line numbers included."""
    raw = TELCO.read_bytes().replace(b"Mailed check", b"Mail\xe9d check", 1)  # one latin-1 byte
    src = tmp_path / f"telco.csv{suffix}"
    src.write_bytes(compress(raw))
    ds = ingest(job_spec(tmp_path, src), client)
    man = ds.manifest
    assert (man.rows_read, man.rows_kept, man.rows_quarantined, man.lines_read) == (7043, 7042, 1, 7043)
    assert man.quarantined_by_reason == {"invalid_encoding": 1}
    line = pd.read_parquet(ds.quarantine_path)["_line"].item()
    assert b"Mail\xe9d check" in raw.split(b"\n")[line - 1]
    assert pd.read_parquet(ds.data_path)["customerID"].is_unique


def test_latin1_declared_encoding_keeps_the_row(client, tmp_path):
    """With data.encoding latin-1 the same byte is read as 'é' and the row is judged on its values."""
    src = tmp_path / "latin1.csv"
    src.write_bytes(TELCO.read_bytes().replace(b"7590-VHVEG", b"7590-VH\xc9VEG", 1))
    ds = ingest(job_spec(tmp_path, src, "data.encoding=latin-1"), client)
    assert ds.manifest.rows_kept == 7043
    assert "7590-VHÉVEG" in set(pd.read_parquet(ds.data_path, columns=["customerID"])["customerID"])


def test_a_binary_file_is_named(tmp_path):
    """Binary data, or a corrupt gzip file, gets one message naming the file, before any read."""
    binary = tmp_path / "data.csv"
    binary.write_bytes(bytes(range(256)) * 40)
    fake = tmp_path / "fake.csv.gz"
    fake.write_bytes(b"not gzip at all\n")
    job = job_spec(tmp_path, binary)
    with pytest.raises(SchemaDriftError, match=r"data.csv: binary data"):
        check_headers([str(binary)], job.table)
    with pytest.raises(SchemaDriftError, match=r"fake.csv.gz: cannot read it"):
        check_headers([str(fake)], job.table)


def _stage(tmp_path: Path, source: Path) -> tuple:
    """The block tasks of a real ingest, run in this process into a staging folder."""
    job = job_spec(tmp_path, source, "data.blocksize=200000", base=INGEST_JOB)
    scans = [scan_file(p, 200_000) for p in job.data.paths()]
    blocks = plan_blocks(scans, check_headers(job.data.paths(), job.table))
    staging = tmp_path / "staging"
    for sub in ("data", "quarantine", "keys"):
        (staging / sub).mkdir(parents=True)
    results = [ingest_block(b, job.table, str(staging), "utf-8", 64) for b in blocks]
    for r in results:
        write_partition(str(staging), r.index, np.zeros(0, np.int64), np.zeros(0, np.int64), job.table, r.rows_clean,
                        r.source)
    return job, scans, blocks, staging, results


def _manifest(job, scans, blocks, staging, results) -> Manifest:
    from churn.data.manifest import FileEntry

    return Manifest.from_blocks(dataset="x", created="now", files=[FileEntry(s.path, s.size, s.sha256, s.lines)
                                                                   for s in scans],
                                blocksize=200_000, results=results, written=count_written(staging, [
                                    b.index for b in blocks]), duplicates_removed=0, id_column=job.table.id,
                                seconds=0.0)


def test_reconciliation_catches_a_lost_partition_and_a_lost_row(tmp_path, dirty_source):
    """Counts come from the files written: a deleted partition or a row cut from one fails the check."""
    job, scans, blocks, staging, results = _stage(tmp_path, dirty_source / "churn-0000.csv")
    _manifest(job, scans, blocks, staging, results).check(1.0)  # untouched: reconciles

    part = staging / "data" / "part-00002.parquet"
    table = pq.read_table(part)
    pq.write_table(table.slice(1), part)  # one row gone after the block reported its counts
    with pytest.raises(IngestError, match=r"read \d+ != kept \d+ \+ quarantined \d+ \+ duplicates \d+"):
        _manifest(job, scans, blocks, staging, results).check(1.0)

    part.unlink()
    with pytest.raises(IngestError, match=r"data partition file\(s\) missing after writing: part-00002.parquet"):
        _manifest(job, scans, blocks, staging, results)


def test_reconciliation_catches_a_block_that_lost_lines(tmp_path, dirty_source):
    """A block whose rows do not cover its lines, or a block that never ran, fails the check."""
    job, scans, blocks, staging, results = _stage(tmp_path, dirty_source / "churn-0000.csv")
    results[1].lines -= 1  # as if the block had been cut short
    with pytest.raises(IngestError, match=r"the blocks hold \d+ lines but \d+ rows were read"):
        _manifest(job, scans, blocks, staging, results).check(1.0)
    results[1].lines += 1
    with pytest.raises(IngestError, match=r"the files hold 6000 data lines but the blocks saw"):
        _manifest(job, scans, blocks[:-1], staging, results[:-1]).check(1.0)  # the last block is lost


def test_hash_collisions_never_drop_a_distinct_customer(client, tmp_path, dirty_source):
    """With a 4-bit id hash every id collides: only true repeats (same text) are dropped."""
    expected = json.loads((dirty_source / "expected.json").read_text())
    job = job_spec(tmp_path, f"{dirty_source}/*.csv", "data.blocksize=200000", base=INGEST_JOB)
    with dask.config.set({"churn.ingest.dedup-key-bits": 4}):
        ds = ingest(job, client)
    man = ds.manifest
    assert man.duplicates_removed == expected["duplicates_removed"]
    assert man.rows_kept == expected["rows_kept"]
    assert pd.read_parquet(ds.data_path, columns=["customerID"])["customerID"].is_unique


def test_a_reused_dataset_meets_the_current_budget(client, tmp_path, dirty_source):
    """Built with a 5 % budget, the same dataset is refused by a job allowing 1 %."""
    ingest(job_spec(tmp_path, f"{dirty_source}/*.csv", base=INGEST_JOB), client)
    strict = job_spec(tmp_path, f"{dirty_source}/*.csv", "data.max_bad_fraction=0.01", base=INGEST_JOB)
    with pytest.raises(IngestError, match="bad-row budget exceeded"):
        ingest(strict, client)


def test_force_replaces_without_the_name_ever_missing(client, tmp_path):
    """While --force rebuilds, a reader polling the dataset always finds a manifest; the files of the
    version a job took stay while it holds it, and a later run's cleanup removes them once it lets go."""
    job = job_spec(tmp_path, TELCO)
    first = ingest(job, client)
    taken = [f.resolve() for f in first.data_path.glob("*.parquet")]  # the files a running job reads
    misses, polls, stop = [], [0], threading.Event()

    def reader() -> None:
        while not stop.is_set():
            polls[0] += 1
            if not (first.root / "manifest.json").is_file():
                misses.append(time.perf_counter())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        second = ingest(job, client, force=True)
    finally:
        stop.set()
        thread.join()
    assert polls[0] > 100 and misses == []
    assert second.root == first.root and not second.reused
    out = tmp_path / "datasets"
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == [first.root.name]
    assert sum(pq.read_metadata(f).num_rows for f in taken) == 7043  # still whole under the job that took it
    assert sorted(p for p in out.iterdir() if p.name.startswith(".dataset-")) == sorted([first.version,
                                                                                      second.version])
    release(first.version)
    remove_abandoned(out)
    assert [p for p in out.iterdir() if p.name.startswith(".dataset-")] == [second.version]
    assert len(pd.read_parquet(second.data_path)) == 7043


def test_a_source_rewritten_while_it_is_read_fails_the_ingest(client, tmp_path, monkeypatch):
    """The file changes (same size) after the scan hashed it and before its blocks are read: one line naming
    it, and nothing published."""
    src = tmp_path / "telco.csv"
    src.write_bytes(b"".join(TELCO.read_bytes().splitlines(keepends=True)[:300]))
    scan = ingest_module.scan_blocks

    def scan_then_rewrite(*args, **kwargs):
        found = scan(*args, **kwargs)
        time.sleep(0.05)  # past the file system's clock tick
        src.write_bytes(src.read_bytes().replace(b"Female", b"Fema1e"))
        return found

    monkeypatch.setattr(ingest_module, "scan_blocks", scan_then_rewrite)
    with pytest.raises(IngestError, match=rf"^{src}: changed while it was read .*nothing was published$"):
        ingest(job_spec(tmp_path, src, "data.max_bad_fraction=1"), client)
    assert not list((tmp_path / "datasets").glob("dataset-*"))


def test_every_parse_option_is_in_the_dataset_key(tmp_path):
    """Encoding, block size and the churn.ingest settings each change the dataset's name; another
    spelling of one codec does not."""
    scans = [scan_file(str(TELCO), 1 << 20)]

    def key(*sets: str) -> str:
        job = job_spec(tmp_path, TELCO, *sets)
        return dataset_key(scans, job.table, parse_options(job, resolve_blocksize(job)))

    base = key()
    assert key("data.encoding=UTF8") == base
    assert len({base, key("data.encoding=latin-1"), key("data.blocksize=1MiB"), key("data.blocksize=2MiB")}) == 4
    with dask.config.set({"churn.ingest.dedup-buckets": 3}):
        assert key() != base


@pytest.mark.cluster
def test_concurrent_ingests_of_the_same_input_all_succeed(client, tmp_path):
    """Three `churn ingest` processes at once on one input and output: all exit 0, one dataset, no leftovers;
    a staging folder of another host is left alone (on the suite's cluster: the race is on the output folder)."""
    out = tmp_path / "datasets"
    foreign = out / ".staging-0000-foreign"
    foreign.mkdir(parents=True)
    (foreign / "owner.json").write_text(json.dumps({"host": socket.gethostname() + "-elsewhere", "pid": 1}))
    args = [sys.executable, "-m", "churn.cli", "ingest", str(INGEST_JOB), "--scheduler", client.scheduler.address,
            "--set", f"data.source={TELCO}", "--set", f"data.output={out}"]
    procs = [subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert len(list(out.glob("dataset-*"))) == 1
    assert sorted(p.name for p in out.glob(".staging-*")) == [foreign.name]
    [dataset] = out.glob("dataset-*")
    assert json.loads((dataset / "manifest.json").read_text())["rows_kept"] == 7043


def test_quoted_newlines_across_block_boundaries_keep_rows_whole(client, tmp_path):
    """A free-text column with newlines in every 4th row, 4 KiB blocks: every row kept whole, and a
    bad row far down the file is reported on its true physical line."""
    frame = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(1500)
    frame["note"] = ["called twice,\nthen wrote:\n\"cancel\"" if i % 4 == 0 else "none" for i in range(len(frame))]
    frame.loc[1400, "Contract"] = "Forever"
    src = tmp_path / "notes.csv"
    frame.to_csv(src, index=False)
    ds = ingest(job_spec(tmp_path, src, "data.blocksize=4096", "schema.ignore=[note]"), client)
    man = ds.manifest
    physical = src.read_bytes().count(b"\n") - 1
    assert man.partitions > 20
    assert (man.rows_read, man.rows_kept, man.rows_quarantined) == (1500, 1499, 1)
    assert man.lines_read == physical == 1500 + 2 * 375
    line = pd.read_parquet(ds.quarantine_path)["_line"].item()
    assert src.read_text().split("\n")[line - 1].startswith(frame.loc[1400, "customerID"] + ",")


def test_writing_a_partition_twice_drops_nothing_more(tmp_path):
    """write_partition run again (its worker died after writing) leaves the partition as the first run
    left it; staged rows that are not the count the block reported are an error."""
    schema = job_spec(tmp_path, TELCO).table
    staging = tmp_path / "staging"
    for sub in ("data", "keys"):
        (staging / sub).mkdir(parents=True)
    rows = pa.Table.from_pandas(pd.read_csv(TELCO).head(50).astype({"TotalCharges": str}), preserve_index=False)
    rows = rows.append_column("_line", pa.array(range(2, 52), pa.int64()))
    stage_clean(rows, str(staging), 0)
    part = staging / "data" / "part-00000.parquet"
    drop = np.array([3, 10, 11])
    none = np.zeros(0, np.int64)
    assert write_partition(str(staging), 0, drop, none, schema, staged_rows=50, source="x.csv") == (3, 0)
    once = pq.read_table(part)
    assert once.num_rows == 47 and "7795-CFOCW" not in once.column("customerID").to_pylist()
    assert "_line" not in once.column_names
    assert write_partition(str(staging), 0, drop, none, schema, staged_rows=50, source="x.csv") == (3, 0)
    assert pq.read_table(part).equals(once)
    with pytest.raises(IngestError, match="50 rows where the block wrote 48"):
        write_partition(str(staging), 0, drop, none, schema, staged_rows=48, source="x.csv")


def test_each_clean_row_knows_its_physical_line(tmp_path):
    """The lines the parse gives the clean rows (a conflicting row is quarantined with its line) are theirs,
    also after a stray quote made the parse read the lines it swallowed again."""
    lines = TELCO.read_text().split("\n")[:60]
    lines[20] = lines[20].replace(",Female,", ',"Female,', 1).replace(",Male,", ',"Male,', 1)
    data = "\n".join(lines[1:]).encode()
    job = job_spec(tmp_path, TELCO)
    parsed = parse_block(data, lines[0].split(","), 2, job.table, "t.csv", "utf-8")
    ids = [i for t in parsed.clean for i in t.column("customerID").to_pylist()]
    numbers = np.concatenate(parsed.clean_lines).tolist()
    assert len(ids) == len(numbers) == 58 and [r[0] for r in parsed.rejected] == [21]
    assert all(lines[n - 1].startswith(i + ",") for i, n in zip(ids, numbers, strict=True))


def test_distinct_ids_per_hash_range_match_python_sets(tmp_path):
    """count_range's rows and distinct ids of S, K, C, K ∪ C and S ∪ K ∪ C equal Python's set sizes, over
    random blocks whose sets are empty, repeat ids and overlap, on a whole and a half hash range."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        staging = tmp_path / str(trial)
        (staging / "keys").mkdir(parents=True)
        pool = rng.integers(0, 2**64 - 1, int(rng.integers(1, 40)), dtype=np.uint64)
        blocks = list(range(int(rng.integers(1, 4))))
        drawn: dict[str, list[int]] = {w: [] for w in distinct.SETS}
        for b in blocks:
            for which in distinct.SETS:
                keys = rng.choice(pool, int(rng.integers(0, 15)))
                drawn[which] += keys.tolist()
                np.save(distinct._ids_path(str(staging), b, which), np.sort(keys))
        hi = None if trial % 2 else 2**63
        s, k, c = ([x for x in drawn[w] if hi is None or x < hi] for w in distinct.SETS)
        assert distinct.count_range(str(staging), blocks, 0, hi) == distinct.IdCounts(
            len(s), len(k), len(c), len(set(s)), len(set(k)), len(set(c)), len(set(k) | set(c)),
            len(set(s) | set(k) | set(c)))
