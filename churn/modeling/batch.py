"""Batch scoring on the cluster: the ingest's blocks and rules, then the model, block by block.

Each block is parsed and checked with the table's schema (the rules logged with the model; the
label may be absent), rows that break it are quarantined with their reasons as in ingest (more
than ``data.max_bad_fraction`` of them fail the job, nothing published), and the rest are
scored by the model, which is sent to every worker once. Output: a Parquet dataset of id, probability, decision,
model name and version and the scoring time (and, with ``reasons`` > 0 in the spec, that many reason
codes per row: ``reason_<i>_column``, ``reason_<i>_value``, ``reason_<i>_contribution``, see
:mod:`churn.serving.reasons`), plus its quarantine and a manifest whose counts
must reconcile (lines = rows read + newlines in quoted fields; read = scored + quarantined).

The seconds it reports are those of the scoring itself: the files' scan and every block's pass,
reconciled, counted from when the model and this module are on every worker (what a batch of
any size pays the same, starting the workers, loading and sending the model, is left out).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client

from churn.clusters.info import workers as cluster_workers
from churn.clusters.scatter import scatter
from churn.config import ScoreSpec
from churn.data.blocks import Block, read_block_rows
from churn.data.budget import check_bad_rows
from churn.data.folders import run_folder_name
from churn.data.ingest import balanced_blocksize, check_headers, rejected_rows, scan_blocks
from churn.data.manifest import IngestError
from churn.data.parse import count_lines, parse_block
from churn.data.partitions import map_blocks
from churn.data.publish import new_staging
from churn.data.validate import reason_counts
from churn.serving.predict import predict_frame
from churn.serving.reasons import reason_columns

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """What the output names: the model's registered name and version (None for a run's model)."""

    uri: str
    name: str | None
    version: str | None
    threshold: float


@dataclass
class BlockScore:
    index: int
    lines: int
    rows_read: int
    embedded_newlines: int
    rows_scored: int
    rows_quarantined: int
    reasons: dict[str, int]


@dataclass
class ScoreResult:
    root: Path
    rows_read: int
    rows_scored: int
    rows_quarantined: int
    reasons: dict[str, int]
    seconds: float  # the scoring itself: scan and blocks (not the model's load and broadcast)


def ready() -> None:
    """Nothing: run on every worker before the clock starts, its unpickling imports this module
    (pyarrow, the parser, the rules) there, as the model's import scikit-learn."""


def _repeated(value: str | None, n: int) -> pa.Array:
    """``value`` ``n`` times as a string column, built in Arrow (a Python list of n costs ~50x more)."""
    one = pa.array([value], pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), one).cast(pa.string())


def score_block(block: Block, spec: ScoreSpec, staging: str, model: Any, ref: ModelRef, scored_at: str
                ) -> BlockScore:
    """Parse, check and score one block; write its scores and its quarantine."""
    schema = spec.table
    data, first_line = read_block_rows(block)
    lines = count_lines(data)
    parsed = parse_block(data, list(block.header), first_line, schema, block.path, spec.data.encoding,
                         lines=lines, require_label=False)
    clean = pa.concat_tables(parsed.clean).combine_chunks()
    rows = clean.select(schema.features).to_pandas()
    scores = predict_frame(model, rows, ref.threshold, spec.reasons) if len(rows) else None
    n = clean.num_rows
    out = {}
    if schema.id:
        out[schema.id] = clean.column(schema.id)
    out["probability"] = pa.array(scores["probability"].to_numpy() if n else np.zeros(0))
    out["decision"] = pa.array(scores["decision"].to_numpy() if n else np.zeros(0, np.int64))
    out["model_name"] = _repeated(ref.name, n)
    out["model_version"] = _repeated(ref.version, n)
    stamp = np.datetime64(scored_at.removesuffix("Z"), "s")
    out["scored_at"] = pa.array(np.full(n, stamp)).cast(pa.timestamp("s", tz="UTC"))
    for col in reason_columns(spec.reasons):
        kind = pa.float64() if col.endswith("contribution") else pa.string()  # reason_<i>_contribution: a number
        out[col] = pa.array(scores[col].to_numpy() if n else [], kind, from_pandas=kind == pa.string())  # blank: null
    name = f"part-{block.index:05d}.parquet"
    pq.write_table(pa.table(out), os.path.join(staging, "data", name))
    quarantine = pa.concat_tables(parsed.quarantine)
    quarantine = quarantine.append_column("_raw", pa.nulls(quarantine.num_rows, pa.string()))
    if parsed.rejected:
        quarantine = pa.concat_tables([quarantine, rejected_rows(parsed.rejected, schema, block.path)],
                                      promote_options="default")
    pq.write_table(quarantine, os.path.join(staging, "quarantine", name))
    return BlockScore(block.index, lines, parsed.records, parsed.embedded_newlines, n, quarantine.num_rows,
                      dict(reason_counts(quarantine.column("_reasons").to_pylist())))


def score(spec: ScoreSpec, client: Client, model: Any, ref: ModelRef) -> ScoreResult:
    """Score ``spec``'s data on ``client``'s cluster with ``model`` (a fitted inference pipeline)."""
    paths = spec.data.paths()
    headers = check_headers(paths, spec.table, spec.data.encoding, require_label=False)
    blocksize = balanced_blocksize(spec, paths, len(cluster_workers(client)))
    out_root = Path(spec.data.output).resolve()
    out_root.mkdir(parents=True, exist_ok=True)
    [model_future] = scatter(client, [model], broadcast=True)  # to each worker once
    client.run(ready, on_error="ignore")  # and this module: the blocks' clock does not count its import
    t0 = time.perf_counter()
    scans, blocks = scan_blocks(paths, headers, blocksize, client)
    scored_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    staging = new_staging(out_root, "scores")
    for sub in ("data", "quarantine"):
        (staging / sub).mkdir()
    try:
        results: list[BlockScore] = map_blocks(client, "score", score_block, blocks, spec, str(staging), model_future,
                                               ref, scored_at)
        written = {sub: sum(pq.read_metadata(staging / sub / f"part-{b.index:05d}.parquet").num_rows
                            for b in blocks) for sub in ("data", "quarantine")}
        read = sum(r.rows_read for r in results)
        lines = sum(r.lines for r in results)
        embedded = sum(r.embedded_newlines for r in results)
        file_lines = sum(s.lines - 1 for s in scans if s.lines)
        if read != written["data"] + written["quarantine"] or lines != read + embedded or (
                all(s.lines is not None for s in scans) and file_lines != lines):
            raise IngestError(f"score counts do not reconcile: {file_lines} lines in the files, {lines} in the "
                              f"blocks, {read} rows read, {written['data']} scored + {written['quarantine']} "
                              "quarantined written")
        reasons: dict[str, int] = {}
        for r in results:
            for k, v in r.reasons.items():
                reasons[k] = reasons.get(k, 0) + v
        check_bad_rows("score", read, written["quarantine"], reasons, spec.data.max_bad_fraction)  # nothing published
        result = ScoreResult(root=out_root, rows_read=read, rows_scored=written["data"],
                             rows_quarantined=written["quarantine"], reasons=dict(sorted(reasons.items())),
                             seconds=round(time.perf_counter() - t0, 3))
        final = out_root / run_folder_name(f"scores-{ref.name or 'model'}-v{ref.version or 'run'}")
        manifest = {**asdict(result), "root": str(final), "model": asdict(ref), "scored_at": scored_at,
                    "files": [{"path": s.path, "size": s.size, "sha256": s.sha256} for s in scans],
                    "blocks": [asdict(r) for r in results]}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2))
        (staging / "owner.json").unlink()
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.root = final
    log.info("score: %d read, %d scored, %d quarantined → %s", read, result.rows_scored, result.rows_quarantined,
             final)
    return result
