"""The typed manifest of an ingested dataset, and the checks run on it before it is published."""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 6  # bump when the dataset layout, block cutting or validation rules change


class IngestError(RuntimeError):
    """Ingest could not produce a dataset that reconciles (budget exceeded, counts off, no rows)."""


@dataclass
class BlockResult:
    """What one block task read and wrote."""

    index: int
    source: str
    lines: int  # physical lines in the block's bytes (header excluded), counted apart from the parser
    rows_read: int  # records: clean + quarantined, including lines rejected before parsing
    embedded_newlines: int  # newlines inside quoted fields: lines = rows_read + embedded_newlines
    rows_clean: int
    rows_quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenRows:
    """Rows in the staged Parquet files, from their metadata."""

    clean: int
    quarantined: int


@dataclass(frozen=True)
class FileEntry:
    """One input file as the ingest saw it."""

    path: str
    size: int
    sha256: str
    lines: int | None  # physical lines, header included (None: compressed, counted by its block)


@dataclass
class Manifest:
    """Counts and provenance of one dataset; ``manifest.json`` beside the data."""

    dataset: str
    format_version: int
    created: str
    files: list[FileEntry]
    blocksize: int
    partitions: int
    lines_read: int  # physical data lines, counted from the bytes
    rows_read: int
    rows_kept: int  # from the Parquet metadata of the written files
    rows_quarantined: int  # likewise
    quarantined_by_reason: dict[str, int]
    duplicates_removed: int
    id_column: str | None
    seconds: float
    blocks: list[BlockResult] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall time of scan, blocks, duplicates, …
    kept_distinct_ids: int | None = None  # distinct ids in the kept rows, counted from the files (None: no id)

    @classmethod
    def from_blocks(cls, *, dataset: str, created: str, files: list[FileEntry], blocksize: int,
                    results: list[BlockResult], written: WrittenRows, duplicates_removed: int,
                    id_column: str | None, seconds: float, kept_distinct_ids: int | None = None) -> Manifest:
        """The manifest of a staged dataset: kept and quarantined rows as the files on disk hold
        them (``written``), read rows and lines as the block tasks counted them."""
        reasons = sum((Counter(r.reasons) for r in results), Counter())
        return cls(dataset=dataset, format_version=FORMAT_VERSION, created=created, files=files,
                   blocksize=blocksize, partitions=len(results), lines_read=sum(r.lines for r in results),
                   rows_read=sum(r.rows_read for r in results), rows_kept=written.clean,
                   rows_quarantined=written.quarantined, quarantined_by_reason=dict(sorted(reasons.items())),
                   duplicates_removed=duplicates_removed,
                   id_column=id_column, seconds=round(seconds, 3), blocks=results,
                   kept_distinct_ids=kept_distinct_ids)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        return cls(**{**data, "files": [FileEntry(**f) for f in data["files"]],
                      "blocks": [BlockResult(**b) for b in data.get("blocks", [])]})

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.from_dict(json.loads(path.read_text()))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def check(self, max_bad_fraction: float) -> None:
        """Counts reconcile, there are rows, and the bad rows are within the budget.

        Three independent counts must agree: the lines in the files (the driver's scan), the
        lines the block tasks saw (every data line in exactly one block, each a record or inside
        a quoted field), and the rows in the written Parquet files plus the duplicates removed;
        and the kept rows hold as many distinct ids, counted from the files, as rows.
        """
        read, kept, quarantined, dups = (self.rows_read, self.rows_kept, self.rows_quarantined,
                                         self.duplicates_removed)
        if read != kept + quarantined + dups:
            raise IngestError(f"counts do not reconcile: read {read} != kept {kept} + quarantined "
                              f"{quarantined} + duplicates {dups} (kept and quarantined as written to disk)")
        if self.kept_distinct_ids is not None and self.kept_distinct_ids != kept:
            raise IngestError(f"counts do not reconcile: {kept} rows kept but {self.kept_distinct_ids} distinct ids "
                              "among them")
        embedded = sum(b.embedded_newlines for b in self.blocks)
        if self.lines_read != read + embedded:
            raise IngestError(f"counts do not reconcile: the blocks hold {self.lines_read} lines but {read} rows "
                              f"were read with {embedded} newlines inside quoted fields")
        if all(f.lines is not None for f in self.files):
            data_lines = sum(f.lines - 1 for f in self.files if f.lines)
            if data_lines != self.lines_read:
                raise IngestError(f"counts do not reconcile: the files hold {data_lines} data lines but the "
                                  f"blocks saw {self.lines_read}")
        if read == 0:
            raise IngestError("no data rows: " + ", ".join(f.path for f in self.files)
                              + " hold only a header")
        self.check_budget(max_bad_fraction)

    def check_budget(self, max_bad_fraction: float) -> None:
        """The share of quarantined rows is within ``data.max_bad_fraction``."""
        read, quarantined = self.rows_read, self.rows_quarantined
        if read and quarantined / read > max_bad_fraction:
            raise IngestError(
                f"bad-row budget exceeded: {quarantined} of {read} rows ({quarantined / read:.2%}) failed "
                f"validation, budget is {max_bad_fraction:.2%} (data.max_bad_fraction); "
                f"by reason: {self.quarantined_by_reason}")
