"""One block's bytes → validated rows, with every physical line accounted for.

What pyarrow's CSV reader does not do, and this module adds:

* **Encodings.** Lines whose bytes are not valid in the declared encoding are quarantined as
  ``invalid_encoding`` (the rest of the block is kept); other encodings are transcoded to UTF-8
  (UTF-16 and UTF-32 files by :func:`churn.data.blocks.read_block_bytes`, whole).
* **Line numbers.** pyarrow numbers records, not physical lines; a quoted field holding a
  newline makes them differ, so each record's first line is computed from the newlines inside
  its fields.
* **Stray quotes.** An opening quote that never closes swallows the following lines into one
  record. A record that spans several lines *and* fails (wrong field count or validation) is
  taken for one: its first line is quarantined as ``unbalanced_quote`` and the lines it
  swallowed are parsed again on their own, from the first that has commas enough for a row
  (the lines before it, blank or inside a long text, stay with the broken record).
* **Stray carriage returns.** pyarrow ends a record at a lone ``\\r`` too; a line holding one
  (outside a CRLF) is quarantined as ``stray_carriage_return`` and the lines around it are kept.
* **A count the parser cannot fake.** The newlines in the bytes must equal the records parsed
  plus the newlines inside their fields; anything else is an error, never a silent drop.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from churn.config import TableSchema
from churn.data.blocks import WIDE, count_byte
from churn.data.manifest import IngestError
from churn.data.validate import validate_table

_DICT = pa.dictionary(pa.int32(), pa.string())
_UTF8 = ("utf-8", "utf8", "utf_8")


def count_lines(data: bytes) -> int:
    """Physical lines: newlines, plus an unterminated last line."""
    return count_byte(data, 10) + (1 if data and not data.endswith(b"\n") else 0)


@dataclass
class ParsedBlock:
    """The validated rows of one block and the counts that must reconcile."""

    clean: list[pa.Table] = field(default_factory=list)
    clean_lines: list[np.ndarray] = field(default_factory=list)  # physical line of each clean row, per table
    quarantine: list[pa.Table] = field(default_factory=list)  # validation failures, text fields
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, raw text): no fields
    records: int = 0  # rows read: clean + quarantined + rejected
    embedded_newlines: int = 0  # newlines inside quoted fields of those records


def decode_segments(data: bytes, encoding: str, first_line: int
                    ) -> tuple[list[tuple[bytes, int]], list[tuple[int, str, str]]]:
    """Split ``data`` around lines that are not valid ``encoding``: (UTF-8 segments with their
    first line, rejected lines)."""
    segments: list[tuple[bytes, int]] = []
    rejected: list[tuple[int, str, str]] = []
    start, line = 0, first_line
    while start < len(data):
        chunk = data[start:]
        try:
            text = chunk.decode(encoding)
        except UnicodeDecodeError as exc:
            bad_start = chunk.rfind(b"\n", 0, exc.start) + 1
            bad_end = chunk.find(b"\n", exc.start)
            bad_end = len(chunk) if bad_end < 0 else bad_end + 1
            if bad_start:
                good = chunk[:bad_start]
                segments.append((good if encoding.lower() in _UTF8 else good.decode(encoding).encode(), line))
            bad_line = line + chunk.count(b"\n", 0, bad_start)
            rejected.append((bad_line, "invalid_encoding",
                             chunk[bad_start:bad_end].rstrip(b"\r\n").decode(encoding, errors="replace")))
            start += bad_end
            line = bad_line + 1
            continue
        segments.append((chunk if encoding.lower() in _UTF8 else text.encode(), line))
        break
    return segments, rejected


_BLANK = ["", " "]  # the blank cells a typed parse may read as null (others: the text path)


def _read(data: bytes, header: list[str], schema: TableSchema) -> tuple[pa.Table, list[tuple[int, str]]]:
    """pyarrow's parse; invalid records (record index from 0, text) are returned.

    Fast path: numeric columns parsed as numbers (blank cells null), categoricals dictionary-
    encoded, the rest text. If any numeric cell is not a plain number, the segment is parsed
    again with every field as text, for the validation to name each bad cell.
    """
    levels = {*schema.categorical, schema.label}
    text_types = {c: _DICT if c in levels else pa.string() for c in header}
    typed = {**text_types, **{c: pa.int64() if rule.integer else pa.float64()
                              for c, rule in schema.numeric.items()}}
    check_utf8 = not data.isascii()  # ASCII is valid UTF-8: skip the parser's check (a quarter of its time)
    for types in (typed, text_types):
        bad: list[tuple[int, str]] = []

        def on_invalid(row: Any, bad: list[tuple[int, str]] = bad) -> str:
            bad.append((row.number - 1, row.text))
            return "skip"

        try:
            table = pacsv.read_csv(
                pa.py_buffer(data),
                read_options=pacsv.ReadOptions(column_names=header, use_threads=False,
                                               block_size=max(1 << 20, len(data) + 1)),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False),
                convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False,
                                                     check_utf8=check_utf8, quoted_strings_can_be_null=False,
                                                     null_values=_BLANK if types is typed else []),
            )
        except pa.ArrowInvalid as exc:
            if types is typed and "CSV conversion error" in str(exc) and "UTF8" not in str(exc):
                continue  # a cell that is not a plain number: the text path names it
            raise
        return table, bad
    raise AssertionError("unreachable")


def _newlines_per_row(table: pa.Table) -> np.ndarray:
    """Newlines inside the fields of each row."""
    total = np.zeros(table.num_rows, np.int64)
    for col in table.columns:
        col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
        if not (pa.types.is_string(col.type) or pa.types.is_dictionary(col.type)):
            continue  # numbers hold no newlines
        if pa.types.is_dictionary(col.type):
            per_value = pc.count_substring(col.dictionary, "\n").to_numpy(zero_copy_only=False)
            total += per_value[col.indices.to_numpy(zero_copy_only=False)] if len(per_value) else 0
        else:
            total += pc.count_substring(col, "\n").to_numpy(zero_copy_only=False)
    return total


def _line_starts(data: bytes) -> np.ndarray:
    """Byte offset of each physical line's start."""
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10)
    return np.concatenate([[0], ends + 1]).astype(np.int64)


def _rowless_lines(data: bytes, start: int, end: int, fields: int) -> int:
    """How many lines at the start of ``data[start:end]`` hold too few commas to be a row of
    ``fields`` fields (blank lines, the inside of a long quoted text): a broken quoted field
    that swallowed them keeps them, rather than each being parsed again as a bad row of its own
    (a cell of 2 M newlines was 2 M quarantined rows and 1 GB)."""
    view = np.frombuffer(data, np.uint8)[start:end]
    line_ends = np.flatnonzero(view == 10)
    if not len(line_ends) or line_ends[-1] != len(view) - 1:
        line_ends = np.append(line_ends, len(view))  # an unterminated last line
    commas = np.searchsorted(np.flatnonzero(view == 44), line_ends)  # commas before each line's end
    per_line = np.diff(commas, prepend=0)
    rows = np.flatnonzero(per_line >= fields - 1)
    return int(rows[0]) if len(rows) else len(line_ends)


def _swallowing_rows(quarantine: pa.Table, span_of: dict[int, int], schema: TableSchema) -> list[int]:
    """Lines of quarantined multi-line rows where a field that failed validation holds a newline
    (a legit quoted newline in a column that passed is not a stray quote)."""
    out = []
    column_of = {"missing_id": schema.id, "unknown_label": schema.label}
    for row in quarantine.select(["_line", "_reasons"]).to_pylist():
        if row["_line"] not in span_of:  # a one-line row
            continue
        failed = set()
        for reason in row["_reasons"].split(";"):
            code, _, col = reason.partition(":")
            failed.add(col or column_of.get(code))
        fields = quarantine.filter(pc.equal(quarantine.column("_line"), row["_line"]))
        if any(c and "\n" in (fields.column(c)[0].as_py() or "") for c in failed):
            out.append(row["_line"])
    return out


def _split_at_stray_returns(data: bytes, first_line: int, header: list[str], schema: TableSchema, source: str,
                            out: ParsedBlock, require_label: bool) -> bool:
    """When ``data`` holds a carriage return not followed by a newline (pyarrow ends a record at
    it, so records and lines disagree): reject each line holding one as ``stray_carriage_return``,
    parse the lines between them, and return True; False when there is none."""
    if b"\r" not in data:
        return False
    codes = np.frombuffer(data, np.uint8)
    cr = np.flatnonzero(codes == 13)
    after = np.append(codes, 0)[cr + 1]  # the byte after each CR (0 past the end)
    lone = cr[after != 10]
    if not len(lone):
        return False
    starts = _line_starts(data)
    if starts[-1] == len(data):
        starts = starts[:-1]  # the last line ends the data: no line starts there
    bounds = [*starts.tolist(), len(data)]
    prev = 0
    for k in np.unique(np.searchsorted(starts, lone, side="right") - 1).tolist():
        parse_segment(data[bounds[prev]:bounds[k]], first_line + prev, header, schema, source, out,
                      require_label=require_label)
        text = data[bounds[k]:bounds[k + 1]].rstrip(b"\r\n").decode("utf-8", errors="replace")
        out.rejected.append((first_line + k, "stray_carriage_return", text))
        out.records += 1
        prev = k + 1
    parse_segment(data[bounds[prev]:], first_line + prev, header, schema, source, out, require_label=require_label)
    return True


def parse_segment(data: bytes, first_line: int, header: list[str], schema: TableSchema, source: str,
                  out: ParsedBlock, physical: int | None = None, require_label: bool = True) -> None:
    """Parse, number, validate and (for stray quotes) repair one UTF-8 segment into ``out``
    (``physical``: its line count when the caller has counted it already)."""
    if not data:
        return
    physical = count_lines(data) if physical is None else physical
    table, bad = _read(data, header, schema)
    n_records = table.num_rows + len(bad)
    # spans: physical lines per record, in record order
    good = np.ones(n_records, bool)
    good[[i for i, _ in bad]] = False
    spans = np.ones(n_records, np.int64)
    if n_records != physical:  # some record holds newlines: count them
        spans[good] += _newlines_per_row(table)
        spans[~good] += np.array([text.count("\n") for _, text in bad], np.int64)
    if int(spans.sum()) != physical:
        if _split_at_stray_returns(data, first_line, header, schema, source, out, require_label):
            return
        raise IngestError(f"{source}: lines {first_line}..{first_line + physical - 1} hold {physical} lines but "
                          f"the parser returned {n_records} records covering {int(spans.sum())}")
    starts = first_line + np.cumsum(spans) - spans
    clean, quarantine = validate_table(table, schema, source, starts[good], require_label=require_label)
    clean_lines = starts[good][~np.isin(starts[good], quarantine.column("_line").to_numpy())]

    # stray quotes: a record that spans lines and breaks (wrong field count, or a field that fails
    # validation holds a newline) keeps only its first line as the culprit
    multi = spans > 1
    span_of = dict(zip(starts[multi].tolist(), spans[multi].tolist(), strict=True))  # only multi-line records
    broken = sorted({int(starts[i]) for i, _ in bad if spans[i] > 1}
                    | set(_swallowing_rows(quarantine, span_of, schema) if span_of else ()))
    if broken:
        quarantine = quarantine.filter(pc.invert(pc.is_in(quarantine.column("_line"), pa.array(broken, pa.int64()))))
        line_starts = _line_starts(data)
        for line in broken:
            k = line - first_line
            end = k + span_of.get(line, 1)
            first_text = data[line_starts[k]:line_starts[k + 1]].rstrip(b"\r\n").decode()
            out.rejected.append((line, "unbalanced_quote", first_text))
            out.records += 1
            rest_end = line_starts[end] if end < len(line_starts) else len(data)
            absorbed = _rowless_lines(data, int(line_starts[k + 1]), int(rest_end), len(header))
            out.embedded_newlines += absorbed
            rest_start = line_starts[k + 1 + absorbed] if k + 1 + absorbed < len(line_starts) else len(data)
            parse_segment(data[rest_start:rest_end], line + 1 + absorbed, header, schema, source, out,
                          require_label=require_label)
    out.clean.append(clean)  # after the stray quotes' own rows: clean and clean_lines stay in step
    out.clean_lines.append(clean_lines)
    out.quarantine.append(quarantine)
    for i, text in bad:
        if spans[i] == 1:  # an odd number of quotes on one line: its quote never closes
            out.rejected.append((int(starts[i]), "unbalanced_quote" if text.count('"') % 2 else "wrong_field_count",
                                 text))
    kept_records = n_records - len(broken)
    out.records += kept_records
    out.embedded_newlines += int(spans.sum()) - n_records - sum(span_of.get(b, 1) - 1 for b in broken)


def parse_block(data: bytes, header: list[str], first_line: int, schema: TableSchema, source: str,
                encoding: str, lines: int | None = None, require_label: bool = True) -> ParsedBlock:
    """Every line of ``data`` (no header) as a clean row, a quarantined row or a rejected line.

    UTF-8 blocks go straight to the parser, which checks the bytes itself; only a block it
    refuses for invalid UTF-8 (or a block in another encoding) is decoded line-aware first.
    """
    out = ParsedBlock()
    if codecs.lookup(encoding).name in WIDE:
        encoding = "utf-8"  # read_block_bytes has transcoded it
    if encoding.lower() in _UTF8:
        try:
            parse_segment(data, first_line, header, schema, source, out, physical=lines, require_label=require_label)
            return _with_tables(out, header, schema, source, require_label)
        except pa.ArrowInvalid as exc:
            if "UTF8" not in str(exc):
                raise
            out = ParsedBlock()
    segments, rejected = decode_segments(data, encoding, first_line)
    out.rejected += rejected
    out.records += len(rejected)
    for seg, line in segments:
        parse_segment(seg, line, header, schema, source, out, require_label=require_label)
    return _with_tables(out, header, schema, source, require_label)


def _with_tables(out: ParsedBlock, header: list[str], schema: TableSchema, source: str, require_label: bool
                 ) -> ParsedBlock:
    if not out.clean:  # no rows at all: empty tables with the right columns
        empty = pa.table({c: pa.array([], pa.string()) for c in header})
        clean, quarantine = validate_table(empty, schema, source, np.zeros(0, np.int64), require_label=require_label)
        out.clean.append(clean)
        out.clean_lines.append(np.zeros(0, np.int64))
        out.quarantine.append(quarantine)
    return out
