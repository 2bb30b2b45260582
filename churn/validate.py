"""Row validation for one partition: typed clean rows out, failing rows to quarantine.

Pure pandas, no Dask: each function takes and returns one partition, so the same code runs
per partition on the cluster and in plain tests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.config import TableSchema

KEY_COLUMN = "_key"  # uint64 hash of the entity id (or of the whole row when there is no id)
LABEL_COLUMN = "_label"  # 0/1 label
QUARANTINE_META = ["_reasons", "_source", "_line"]

# reason codes, each followed by ":<column>" where a column is involved
REASONS = (
    "wrong_field_count",
    "empty_line",
    "missing_id",
    "unknown_label",
    "blank_value",
    "not_a_number",
    "not_an_integer",
    "out_of_range",
    "unknown_category",
)

_HASH_KEY = "churn-row-key-v1"  # 16 characters: fixed, so keys are stable across runs


def row_keys(frame: pd.DataFrame, schema: TableSchema) -> np.ndarray:
    """Stable uint64 key per row: hash of the id, or of every declared column without one."""
    if schema.id:
        cols = frame[schema.id].astype("string")
        return pd.util.hash_pandas_object(cols, index=False, hash_key=_HASH_KEY).to_numpy()
    return pd.util.hash_pandas_object(frame[schema.columns].astype("string"), index=False,
                                      hash_key=_HASH_KEY).to_numpy()


def _stripped(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.apply(lambda s: s.astype("string").str.strip())


def validate_partition(
    raw: pd.DataFrame, schema: TableSchema, source: str, lines: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw string rows into (clean typed rows, quarantined rows with reasons).

    Clean rows carry the id (string), numeric features (float64, NaN for allowed blanks),
    categorical features (string), ``_label`` (int8) and ``_key`` (uint64). Quarantined rows
    keep every original field as text plus ``_reasons``, ``_source`` and ``_line``.
    """
    n = len(raw)
    text = _stripped(raw[schema.columns]) if n else raw[schema.columns].astype("string")
    reasons: list[tuple[str, np.ndarray]] = []
    blank = {c: (text[c].fillna("") == "").to_numpy() for c in schema.columns}

    empty = np.logical_and.reduce([blank[c] for c in schema.columns]) if n else np.zeros(0, bool)
    reasons.append(("empty_line", empty))
    live = ~empty

    if schema.id:
        reasons.append(("missing_id", blank[schema.id] & live))

    label_txt = text[schema.label].fillna("")
    is_pos = (label_txt == schema.positive).to_numpy()
    is_neg = (label_txt == schema.negative).to_numpy()
    reasons.append(("unknown_label", ~(is_pos | is_neg) & live))

    out = pd.DataFrame(index=raw.index)
    if schema.id:
        out[schema.id] = text[schema.id]
    for col, rule in schema.numeric.items():
        values = pd.to_numeric(text[col].fillna("").replace("", None), errors="coerce").astype("float64")
        arr = values.to_numpy()
        nan = np.isnan(arr)
        if not rule.nullable:
            reasons.append((f"blank_value:{col}", blank[col] & live))
        reasons.append((f"not_a_number:{col}", nan & ~blank[col] & live))
        finite = ~nan
        if rule.integer:
            bad_int = np.zeros(n, bool)
            bad_int[finite] = arr[finite] != np.round(arr[finite])
            reasons.append((f"not_an_integer:{col}", bad_int))
        oor = np.zeros(n, bool)
        if rule.min is not None:
            oor[finite] |= arr[finite] < rule.min
        if rule.max is not None:
            oor[finite] |= arr[finite] > rule.max
        reasons.append((f"out_of_range:{col}", oor))
        out[col] = arr
    for col, rule in schema.categorical.items():
        values = text[col]
        if not rule.nullable:
            reasons.append((f"blank_value:{col}", blank[col] & live))
        if rule.values is not None:
            unknown = ~values.isin(rule.values).to_numpy() & ~blank[col]
            reasons.append((f"unknown_category:{col}", unknown & live))
        out[col] = values.where(~pd.Series(blank[col], index=values.index), pd.NA)

    bad = np.zeros(n, bool)
    for _, mask in reasons:
        bad |= mask
    out[LABEL_COLUMN] = is_pos.astype("int8")

    clean = out.loc[~bad]
    clean = clean.assign(**{KEY_COLUMN: row_keys(text.loc[~bad], schema)}).reset_index(drop=True)
    quarantine = raw.loc[bad, schema.columns].astype("string").reset_index(drop=True)
    if bad.any():
        labels = np.array([name for name, _ in reasons], dtype=object)
        matrix = np.column_stack([mask[bad] for _, mask in reasons])
        quarantine["_reasons"] = [";".join(labels[row]) for row in matrix]
    else:
        quarantine["_reasons"] = pd.Series([], dtype="string")
    quarantine["_reasons"] = quarantine["_reasons"].astype("string")
    quarantine["_source"] = pd.Series([source] * int(bad.sum()), dtype="string")
    quarantine["_line"] = np.asarray(lines)[bad].astype("int64")
    return clean, quarantine


def reason_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """Rows per reason code (the part before ':'); a row with two reasons counts in both."""
    counts: dict[str, int] = {}
    for cell in quarantine["_reasons"].dropna():
        for code in {r.split(":", 1)[0] for r in cell.split(";")}:
            counts[code] = counts.get(code, 0) + 1
    return counts
