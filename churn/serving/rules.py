"""The table's validation rules, applied to rows sent for scoring: what ingest would quarantine
is refused, with the column and the value named.

The rules travel with the model as plain JSON (its rules.json artifact), so serving needs neither the
job spec nor pydantic; they are the same rules ingest applies (``churn.data.validate``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

MAX_SHOWN = 5  # problems listed in one message
# text that reads as a number but not a finite one (as ingest's churn.data.validate._NOT_FINITE;
# the two layers do not import each other)
NOT_FINITE = re.compile(r"^[+-]?(inf|infinity|nan)$", re.IGNORECASE)


LOOP_ROWS = 256  # up to this many cells a plain loop beats factorising (a served request)


def _trimmed(v: Any) -> Any:
    if isinstance(v, str):
        return v.strip() or np.nan
    return np.nan if v is None or pd.isna(v) else str(v)  # None, NaN, pd.NA, NaT: missing


def text_factors(col: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes, distinct values) of a column whose values are all text (missing: code -1), else None.

    Factorising merges values that compare equal (1, 1.0 and True), which would change what a
    non-text column means; text compares exactly, so only text columns take this path.
    """
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    uniques = np.asarray(uniques, dtype=object)
    if pd.api.types.infer_dtype(uniques, skipna=False) not in ("string", "empty"):
        return None
    return codes, uniques


def text_cells(col: pd.Series) -> np.ndarray:
    """A column as trimmed text, NaN for missing or blank cells (object array).

    A request's few rows go through a plain loop (~30x faster than pandas' string methods);
    a batch of text is factorised first, so each distinct value is trimmed once (a 200,000-row
    partition of a Telco-like table has a handful of values per column). Both give the same cells.
    """
    factors = text_factors(col) if len(col) > LOOP_ROWS else None
    if factors is None:
        return np.array([_trimmed(v) for v in col.to_numpy(dtype=object)], dtype=object)
    codes, uniques = factors
    trimmed = np.array([*(_trimmed(v) for v in uniques), np.nan], dtype=object)
    return trimmed[codes]  # code -1 (missing) takes the trailing NaN


def category_cells(col: pd.Series) -> pd.Categorical | None:
    """A ``category`` column of text with its categories trimmed (blank ones missing), or None for
    any other column. Only the few categories are trimmed, not the rows: the batch scorer hands
    the model Arrow's dictionary columns as categories, and this keeps them so."""
    if not isinstance(col.dtype, pd.CategoricalDtype):
        return None
    categories = np.asarray(col.cat.categories, dtype=object)
    if pd.api.types.infer_dtype(categories, skipna=False) not in ("string", "empty"):
        return None
    # categories equal once trimmed become one; a blank one becomes missing (code -1)
    codes, uniques = pd.factorize(np.array([_trimmed(v) for v in categories], dtype=object), use_na_sentinel=True)
    remap = np.append(codes, -1)  # a missing cell (code -1) stays missing
    return pd.Categorical.from_codes(remap[col.cat.codes.to_numpy()], categories=pd.Index(uniques, dtype=object))


def number_cells(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float values with NaN, blank mask) of a column of numbers or of number-like text."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = col.to_numpy(dtype=float, na_value=np.nan)
        return values, np.isnan(values)
    text = text_cells(col)
    blank = pd.isna(text)
    return pd.to_numeric(pd.Series(text), errors="coerce").to_numpy(dtype=float, na_value=np.nan), blank


@dataclass(frozen=True)
class Problem:
    """One rule a row breaks: the row's position, the column, the value as sent and the rule,
    named with ingest's reason code (``blank_value``, ``not_a_number``, ``not_finite``,
    ``not_an_integer``, ``out_of_range``, ``unknown_category``; ``missing_column`` for a column not sent at all)."""

    row: int | None
    column: str
    value: Any
    rule: str
    what: str  # the rule in words: "is below the minimum 0"

    def __str__(self) -> str:
        if self.row is None:
            return f"missing column(s): {self.column}"
        return f"row {self.row}: {self.column}={self.value!r} {self.what}"

    def as_json(self) -> dict[str, Any]:
        """The problem as plain JSON: a non-finite number as its text (``inf``, ``nan``), which
        strict JSON cannot hold."""
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            value = str(value)
        return {"row": self.row, "column": self.column, "value": value, "rule": self.rule, "message": str(self)}


def rule_breaks(rows: pd.DataFrame, rules: dict[str, Any]) -> list[Problem]:
    """What is wrong with ``rows`` under ``rules`` (``{"numeric": {...}, "categorical": {...}}``):
    up to :data:`MAX_SHOWN` problems, each naming the row, the column, the value and the rule;
    empty when all rows pass.

    A numeric cell must be a finite number or number-like text, as in ingest: a boolean,
    ``inf``, ``NaN`` text (a blank is a missing cell, not ``NaN``) and, in an integer column, a
    fraction are refused; ``3``, ``3.0`` and ``"3"`` are the integer 3.
    """
    problems: list[Problem] = []
    numeric, categorical = rules.get("numeric", {}), rules.get("categorical", {})
    missing = [c for c in [*numeric, *categorical] if c not in rows.columns]
    if missing:
        return [Problem(None, ", ".join(missing), None, "missing_column", "is missing")]

    def report(mask: np.ndarray, col: str, rule: str, what: str) -> None:
        for i in np.flatnonzero(mask)[:MAX_SHOWN - len(problems)]:
            value = rows[col].iloc[i]
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                value = None  # NaN, None, pd.NA: one spelling for a missing cell
            elif hasattr(value, "item"):
                value = value.item()  # a numpy scalar, shown as the plain number
            problems.append(Problem(int(i), col, value, rule, what))

    for col, rule in numeric.items():
        values, blank = number_cells(rows[col])
        if not rule.get("nullable"):
            report(blank, col, "blank_value", "is blank")
        undefined = np.flatnonzero(np.isnan(values) & ~blank)
        spelled = np.zeros(len(values), dtype=bool)  # NaN text: a number, but not a finite one
        spelled[undefined] = [isinstance(v, str) and bool(NOT_FINITE.match(v.strip()))
                              for v in rows[col].iloc[undefined]]
        report(np.isnan(values) & ~blank & ~spelled, col, "not_a_number", "is not a number")
        report(spelled | np.isinf(values), col, "not_finite", "is not a finite number")
        finite = np.isfinite(values)
        if rule.get("integer"):
            report(finite & (values != np.round(values)), col, "not_an_integer", "is not an integer")
        low, high = rule.get("min"), rule.get("max")
        if low is not None:
            report(finite & (values < low), col, "out_of_range", f"is below the minimum {low:g}")
        if high is not None:
            report(finite & (values > high), col, "out_of_range", f"is above the maximum {high:g}")
    for col, rule in categorical.items():
        text = text_cells(rows[col])
        blank = pd.isna(text)
        if not rule.get("nullable"):
            report(blank, col, "blank_value", "is blank")
        levels = rule.get("values")
        if levels is not None:
            known = set(levels)
            report(np.array([t not in known for t in text], dtype=bool) & ~blank, col, "unknown_category",
                   f"is not one of {levels}")
    return problems[:MAX_SHOWN]


def row_problems(rows: pd.DataFrame, rules: dict[str, Any]) -> list[str]:
    """:func:`rule_breaks` as one line per problem, naming the row, the column and the value."""
    return [str(p) for p in rule_breaks(rows, rules)]
