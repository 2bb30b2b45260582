"""Profiles on the cluster: the training split at train time, a new CSV batch at monitor time.

Both run one task per partition (or CSV block) and merge the small profiles in the driver;
the data never leaves the workers. A batch is parsed and checked with the table's rules as in
ingest and batch scoring (label optional), and scored by the registered model, sent to each
worker once; its quarantined rows are counted by reason and column (drift that profiling the
clean rows cannot show: an unseen level never reaches the profile). The same scores give each
block's sums for the label-free performance estimate (:mod:`churn.monitoring.estimate`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from distributed import Client

from churn.clusters.scatter import scatter
from churn.config import TableSchema
from churn.data.blocks import Block, read_block_rows
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN
from churn.data.parse import count_lines, parse_block
from churn.data.partitions import map_blocks
from churn.data.validate import reason_counts
from churn.monitoring.estimate import EstimateSummary
from churn.monitoring.estimate import merge_all as merge_estimates
from churn.monitoring.profile import Profile, merge_all, numeric_edges, profile_features, profile_scores


@dataclass
class BatchProfile:
    """A batch's merged profile and the counts of what was read."""

    profile: Profile
    rows_read: int = 0
    rows_profiled: int = 0
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    by_column: dict[str, int] = field(default_factory=dict)  # rows per "reason:column" (a drift signal)
    estimate: EstimateSummary | None = None  # sums for the label-free performance estimate


def edges_for(sample: pd.DataFrame, schema: TableSchema) -> dict[str, list[float]]:
    """Numeric bin edges from a sample of the reference rows (deciles)."""
    return {c: numeric_edges(sample[c]) for c in schema.numeric}


def _profile_partition(frame: pd.DataFrame, edges: dict[str, list[float]], categorical: list[str]) -> Profile:
    return profile_features(frame, frame[KEY_COLUMN].to_numpy(np.uint64), edges, categorical)


def reference_profile(train_ddf: Any, sample: pd.DataFrame, oof: np.ndarray, y: np.ndarray, keys: np.ndarray,
                      schema: TableSchema, client: Client) -> Profile:
    """The training split's profile: features partition by partition on the workers; scores and
    labels from the champion's calibrated out-of-fold predictions (what the model gives rows it
    was not fitted on)."""
    edges = edges_for(sample, schema)
    parts = [client.submit(_profile_partition, part, edges, list(schema.categorical), pure=False)
             for part in client.compute(train_ddf.to_delayed())]
    profile = merge_all(client.gather(parts))
    profile.update(profile_scores(oof, keys, y))
    return profile


def column_reasons(cells: list[str | None]) -> Counter[str]:
    """Rows per ``reason:column`` (the reason alone for a line that never became fields); a row
    with two reasons counts under both. :func:`churn.data.validate.reason_counts` drops the column."""
    return Counter(r for cell in cells if cell for r in set(cell.split(";")))


def profile_block(block: Block, schema: TableSchema, encoding: str, model: Any, edges: dict[str, list[float]],
                  threshold: float = 0.5
                  ) -> tuple[Profile, int, int, dict[str, int], dict[str, int], EstimateSummary]:
    """Parse, check, score and profile one CSV block: (profile, rows read, quarantined, reasons,
    rows per reason and column, estimate sums at the model's ``threshold``)."""
    data, first_line = read_block_rows(block)
    parsed = parse_block(data, list(block.header), first_line, schema, block.path, encoding,
                         lines=count_lines(data), require_label=False)
    clean = pa.concat_tables(parsed.clean).combine_chunks()
    frame = clean.select(schema.features).to_pandas()
    keys = clean.column(KEY_COLUMN).to_numpy().astype(np.uint64)
    profile = profile_features(frame, keys, edges, list(schema.categorical))
    labels = clean.column(LABEL_COLUMN).to_pandas().astype("float64").to_numpy()
    scores = model.predict_proba(frame)[:, 1] if len(frame) else np.zeros(0)
    labelled = labels if np.isfinite(labels).any() else None
    profile.update(profile_scores(scores, keys, labelled))
    # the batch's fingerprint pairs a run before the labels with the run after them: without an id
    # column the row key hashes the label too, so the fingerprint hashes the features alone
    same_rows = keys if schema.id else pd.util.hash_pandas_object(frame, index=False).to_numpy()
    estimate = EstimateSummary.of(scores, same_rows, threshold, labelled)
    quarantined = sum(t.num_rows for t in parsed.quarantine) + len(parsed.rejected)
    cells = ([r for t in parsed.quarantine for r in t.column("_reasons").to_pylist()]
             + [r for _, r, _ in parsed.rejected])
    return (profile, parsed.records, quarantined, dict(reason_counts(cells)), dict(column_reasons(cells)),
            estimate)


def profile_batch(blocks: list[Block], schema: TableSchema, encoding: str, model: Any, reference: Profile,
                  client: Client, threshold: float = 0.5) -> BatchProfile:
    """The merged profile and estimate sums of every block, the model sent to each worker once."""
    [model_f] = scatter(client, [model], broadcast=True)
    edges = {c: reference["numeric"][c]["edges"] for c in schema.numeric}  # the bins only, not the samples
    results = map_blocks(client, "monitor", profile_block, blocks, schema, encoding, model_f, edges, threshold)
    out = BatchProfile(merge_all([r[0] for r in results]), estimate=merge_estimates([r[5] for r in results]))
    for _, read, quarantined, reasons, by_column, _ in results:
        out.rows_read += read
        out.rows_quarantined += quarantined
        out.reasons = dict(Counter(out.reasons) + Counter(reasons))
        out.by_column = dict(Counter(out.by_column) + Counter(by_column))
    out.rows_profiled = out.profile["rows"]
    return out
