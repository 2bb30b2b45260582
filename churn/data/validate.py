"""Row validation for one partition: typed clean rows out, failing rows to quarantine.

Pure pandas, no Dask: each function takes and returns one partition, so the same code runs
per partition on the cluster and in plain tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from churn.config import TableSchema, setting
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN
from churn.data.hashing import hash_text

# reason codes, each followed by ":<column>" where a column is involved
REASONS = (
    "wrong_field_count",
    "unbalanced_quote",
    "invalid_encoding",
    "stray_carriage_return",
    "empty_line",
    "missing_id",
    "id_too_long",
    "unknown_label",
    "blank_value",
    "not_a_number",
    "not_finite",
    "not_an_integer",
    "out_of_range",
    "unknown_category",
)

_HASH_KEY = "churn-row-key-v1"  # 16 characters: fixed, so keys are stable across runs


def row_keys(table: pa.Table, schema: TableSchema) -> np.ndarray:
    """Stable uint64 key per row: hash of the id, or of every feature and the label without one."""
    if schema.id:
        return hash_text(table.column(schema.id))
    cols = [*schema.features, LABEL_COLUMN]
    frame = pd.DataFrame({c: table.column(c).cast(pa.string()).to_numpy(zero_copy_only=False)
                          if pa.types.is_dictionary(table.column(c).type) else
                          table.column(c).to_numpy(zero_copy_only=False) for c in cols})
    return pd.util.hash_pandas_object(frame, index=False, hash_key=_HASH_KEY).to_numpy()


_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
_NOT_FINITE = r"^[+-]?(inf|infinity|nan)$"  # what pyarrow's number parser reads as a non-finite float
_NULL_TEXT = pa.scalar(None, pa.string())


def _text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Trimmed text with nulls as ''."""
    return pc.fill_null(pc.utf8_trim_whitespace(col.cast(pa.string())), "")


def _levels(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Dictionary-encode a text column: (trimmed distinct values, index per row).

    Checks then run on the few distinct values instead of on every row. A column that the
    CSV reader already dictionary-encoded is used as it is.
    """
    if isinstance(col, pa.ChunkedArray):
        col = col.unify_dictionaries() if pa.types.is_dictionary(col.type) else col
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    enc = col if pa.types.is_dictionary(col.type) else pc.dictionary_encode(col.cast(pa.string()))
    values = pc.fill_null(pc.utf8_trim_whitespace(enc.dictionary), "")
    return values, enc.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)


def _any(mask: np.ndarray) -> np.ndarray | None:
    """``mask``, or None when no row is set in it."""
    return mask if mask.any() else None


def _rows(per_level: np.ndarray, idx: np.ndarray) -> np.ndarray | None:
    """The rows whose level is flagged, or None when no level is (no per-row work)."""
    return per_level[idx] if len(idx) and per_level.any() else None


def _categorical(values: pa.Array, idx: np.ndarray, blank_rows: np.ndarray | None) -> pa.DictionaryArray:
    """Dictionary column over the trimmed values; blank rows are null."""
    uniq = pc.unique(values)
    if len(uniq) == len(values):  # trimming merged no two values: the indices stand as they are
        return pa.DictionaryArray.from_arrays(pa.array(idx, mask=blank_rows), values)
    remap = np.asarray(pc.index_in(values, value_set=uniq).to_numpy(zero_copy_only=False), np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(remap[idx], mask=blank_rows), uniq)


def _numbers(col: pa.ChunkedArray | pa.Array
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(float64 values with NaN, malformed mask, blank mask, non-finite mask) of a text column, or
    of a column the CSV reader already parsed as numbers (nulls are its blank cells); a mask is
    None when no row is set in it.

    A cell that reads as a number but not a finite one (``inf``, ``-Infinity``, ``1e309``,
    ``NaN``) is non-finite, whichever path parsed it; its value is NaN, so no range check sees it.
    """
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        odd = ~np.isfinite(values)
        if not odd.any():
            return values, None, None, None
        blank = col.is_null().to_numpy(zero_copy_only=False)  # the reader's null is a blank cell; NaN is text
        values = np.where(odd, np.nan, values)
        return values, None, _any(blank), _any(odd & ~blank)
    text = pc.fill_null(col.cast(pa.string()), "")
    if isinstance(text, pa.ChunkedArray):
        text = text.combine_chunks()
    blank = pc.equal(text, "").to_numpy(zero_copy_only=False)
    try:  # fast path: every non-blank cell is a plain number
        values = pc.cast(pc.if_else(pa.array(blank), _NULL_TEXT, text), pa.float64()).to_numpy(zero_copy_only=False)
        if not (np.isnan(values) & ~blank).any() and np.isfinite(values[~blank]).all():
            return values, None, _any(blank), None
    except pa.ArrowInvalid:
        pass
    ok = pc.match_substring_regex(text, _NUMBER).to_numpy(zero_copy_only=False)
    if not ok.all():  # only columns with odd cells pay for trimming
        text = pc.utf8_trim_whitespace(text)
        ok = pc.match_substring_regex(text, _NUMBER).to_numpy(zero_copy_only=False)
    blank = pc.equal(text, "").to_numpy(zero_copy_only=False)
    values = pc.cast(pc.if_else(pa.array(ok), text, _NULL_TEXT), pa.float64()).to_numpy(zero_copy_only=False)
    spelled = pc.match_substring_regex(text, _NOT_FINITE, ignore_case=True).to_numpy(zero_copy_only=False)
    overflow = ok & np.isinf(values)  # e.g. 1e309
    values = np.where(overflow, np.nan, values) if overflow.any() else values
    return values, _any(~ok & ~blank & ~spelled), _any(blank), _any(spelled | overflow)


def _required(fields: pa.Schema, schema: TableSchema, *, label_nullable: bool) -> pa.Schema:
    """The clean rows' schema with every column that can hold no null marked required: Parquet then
    writes no definition levels for it (a fifth less time writing a partition). Decided by the
    schema, not the data, so every partition of a dataset has the same schema: the id, numbers
    (a blank is NaN), the key and, with ``require_label``, the label; categoricals unless nullable."""
    nullable = {c for c, rule in schema.categorical.items() if rule.nullable}
    if label_nullable:
        nullable.add(LABEL_COLUMN)
    return pa.schema([f.with_nullable(f.name in nullable) for f in fields])


def _distinct_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, index of each row's distinct row) of a boolean matrix: its rows packed to
    one integer and hashed (``np.unique(axis=0)`` sorts, 20x slower on 2 M rows)."""
    packed = np.packbits(matrix, axis=1)
    if packed.shape[1] > 8:  # more than 64 reasons: rare, sorted
        combos, which = np.unique(matrix, axis=0, return_inverse=True)
        return combos, which.ravel()
    words = np.zeros((len(matrix), 8), np.uint8)
    words[:, :packed.shape[1]] = packed
    which, uniques = pd.factorize(words.view("<u8").ravel())
    bits = np.unpackbits(np.asarray(uniques, "<u8").view(np.uint8).reshape(-1, 8), axis=1)
    return bits[:, :matrix.shape[1]].astype(bool), which


def validate_table(raw: pa.Table, schema: TableSchema, source: str, lines: np.ndarray, *,
                   require_label: bool = True) -> tuple[pa.Table, pa.Table]:
    """Split raw text rows into (clean typed rows, quarantined rows with reasons), in Arrow.

    Clean rows carry the id (string), numeric features (float64, NaN for allowed blanks),
    categorical features (dictionary-encoded strings, null for allowed blanks), ``_label``
    (int8) and ``_key`` (uint64). Quarantined rows keep every original field as text plus
    ``_reasons``, ``_source`` and ``_line``. With ``require_label=False`` (scoring) the label
    may be absent or unknown: ``_label`` is then null, and no row is refused for it.

    Masks are None where no row is set (the common case): checks on clean data cost a test per
    column or per distinct value, not a pass over the rows.
    """
    n = raw.num_rows
    out: dict[str, pa.Array] = {}
    blanks: list[np.ndarray | None] = []  # a row blank in every column is an empty line
    checks: list[tuple[str, np.ndarray | None]] = []  # (reason, rows failing), before the empty-line mask

    if schema.id:
        ident = _text(raw.column(schema.id))
        id_blank = _any(pc.equal(ident, "").to_numpy(zero_copy_only=False))
        blanks.append(id_blank)
        checks.append(("missing_id", id_blank))
        limit = int(setting("ingest.max-id-bytes"))  # read where the block is validated
        checks.append(("id_too_long", _any(pc.greater(pc.binary_length(ident), limit).to_numpy(zero_copy_only=False))))
        out[schema.id] = ident
    for col, rule in schema.numeric.items():
        arr, malformed, blank, not_finite = _numbers(raw.column(col))
        blanks.append(blank)
        if not rule.nullable:
            checks.append((f"blank_value:{col}", blank))
        checks.append((f"not_a_number:{col}", malformed))
        checks.append((f"not_finite:{col}", not_finite))
        if rule.integer and not pa.types.is_integer(raw.column(col).type):  # parsed as integers: nothing to check
            with np.errstate(invalid="ignore"):
                checks.append((f"not_an_integer:{col}", _any(np.isfinite(arr) & (arr != np.round(arr)))))
        if rule.min is not None or rule.max is not None:
            oor = np.zeros(n, bool)  # NaN compares False: blanks are never out of range
            if rule.min is not None:
                oor |= arr < rule.min
            if rule.max is not None:
                oor |= arr > rule.max
            checks.append((f"out_of_range:{col}", _any(oor)))
        out[col] = pa.array(arr)
    for col, rule in schema.categorical.items():
        values, idx = _levels(raw.column(col))
        blank_level = pc.equal(values, "").to_numpy(zero_copy_only=False)
        blank = _rows(blank_level, idx)
        blanks.append(blank)
        if not rule.nullable:
            checks.append((f"blank_value:{col}", blank))
        if rule.values is not None:
            known = pc.is_in(values, value_set=pa.array(rule.values, pa.string())).to_numpy(zero_copy_only=False)
            checks.append((f"unknown_category:{col}", _rows(~known & ~blank_level, idx)))
        out[col] = _categorical(values, idx, blank)
    if schema.label in raw.column_names:
        values, idx = _levels(raw.column(schema.label))
        is_pos = pc.equal(values, schema.positive).to_numpy(zero_copy_only=False)
        known = is_pos | pc.equal(values, schema.negative).to_numpy(zero_copy_only=False)
        label = is_pos.astype(np.int8)[idx] if n else np.zeros(0, np.int8)
        unknown = _rows(~known, idx)
        if require_label:
            blanks.append(_rows(pc.equal(values, "").to_numpy(zero_copy_only=False), idx))
            checks.append(("unknown_label", unknown))
            out[LABEL_COLUMN] = pa.array(label)
        else:
            out[LABEL_COLUMN] = pa.array(label, mask=unknown)
    elif require_label:
        raise ValueError(f"{source}: no label column {schema.label!r}")
    else:
        out[LABEL_COLUMN] = pa.nulls(n, pa.int8())

    empty = np.logical_and.reduce(blanks) if n and blanks and all(b is not None for b in blanks) else None
    reasons = [("empty_line", empty)] if empty is not None and empty.any() else []
    reasons += [(name, mask if empty is None else mask & ~empty) for name, mask in checks if mask is not None]
    bad = np.zeros(n, bool)
    for _, mask in reasons:
        bad |= mask
    clean = pa.table(out)
    if reasons:
        clean = clean.filter(pa.array(~bad))
    clean = clean.append_column(KEY_COLUMN, pa.array(row_keys(clean, schema), pa.uint64()))
    clean = clean.cast(_required(clean.schema, schema, label_nullable=not require_label))

    bad_idx = np.flatnonzero(bad)
    present = [c for c in schema.columns if c in raw.column_names]
    quarantine = raw.select(present).take(pa.array(bad_idx))
    quarantine = pa.table({c: quarantine.column(c).cast(pa.string()) for c in present})
    reason_text = pa.array([], pa.string())
    if len(bad_idx):  # joined once per distinct combination of reasons, not once per row
        labels = np.array([name for name, _ in reasons], dtype=object)
        matrix = np.column_stack([mask[bad_idx] for _, mask in reasons])
        combos, which = _distinct_rows(matrix)
        reason_text = pa.array([";".join(labels[row]) for row in combos], pa.string()).take(which)
    quarantine = quarantine.append_column("_reasons", reason_text)
    quarantine = quarantine.append_column("_source", pa.repeat(pa.scalar(source, pa.string()), len(bad_idx)))
    quarantine = quarantine.append_column("_line", pa.array(np.asarray(lines, np.int64)[bad_idx]))
    return clean, quarantine


def validate_partition(raw: pd.DataFrame, schema: TableSchema, source: str, lines: np.ndarray
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`validate_table` for a pandas frame of text fields; returns pandas frames."""
    table = pa.Table.from_pandas(raw[schema.columns].astype("string"), preserve_index=False)
    clean, quarantine = validate_table(table, schema, source, lines)
    as_pd = {"types_mapper": lambda t: pd.StringDtype() if pa.types.is_string(t) else None}
    clean = pa.table({c: clean.column(c).cast(clean.column(c).type.value_type)
                      if pa.types.is_dictionary(clean.column(c).type) else clean.column(c)
                      for c in clean.column_names})
    return clean.to_pandas(**as_pd), quarantine.to_pandas(**as_pd)


def reason_counts(cells: Iterable[str | None]) -> Counter[str]:
    """Rows per reason code (the part before ':'); a row with two reasons counts in both."""
    return Counter(code for cell in cells if cell for code in {r.split(":", 1)[0] for r in cell.split(";")})
