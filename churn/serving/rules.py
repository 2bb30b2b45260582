"""The table's validation rules, applied to rows sent for scoring: what ingest would quarantine
is refused, with the column and the value named.

The rules travel with the model as plain JSON (model config), so serving needs neither the
job spec nor pydantic; they are the same rules ingest applies (``churn.data.validate``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MAX_SHOWN = 5  # problems listed in one message


def _blank(col: pd.Series) -> np.ndarray:
    text = col.astype("string").str.strip()
    return (col.isna() | (text == "")).to_numpy(dtype=bool, na_value=True)


def row_problems(rows: pd.DataFrame, rules: dict[str, Any]) -> list[str]:
    """What is wrong with ``rows`` under ``rules`` (``{"numeric": {...}, "categorical": {...}}``):
    one line per problem, naming the row, the column and the value; empty when all rows pass."""
    problems: list[str] = []
    numeric, categorical = rules.get("numeric", {}), rules.get("categorical", {})
    missing = [c for c in [*numeric, *categorical] if c not in rows.columns]
    if missing:
        return [f"missing column(s): {', '.join(missing)}"]

    def report(mask: np.ndarray, col: str, what: str) -> None:
        for i in np.flatnonzero(mask)[:MAX_SHOWN - len(problems)]:
            value = rows[col].iloc[i]
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                value = None  # NaN, None, pd.NA: one spelling for a missing cell
            elif hasattr(value, "item"):
                value = value.item()  # a numpy scalar, shown as the plain number
            problems.append(f"row {i}: {col}={value!r} {what}")

    for col, rule in numeric.items():
        blank = _blank(rows[col])
        values = pd.to_numeric(rows[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if not rule.get("nullable"):
            report(blank, col, "is blank")
        report(np.isnan(values) & ~blank, col, "is not a number")
        finite = ~np.isnan(values)
        if rule.get("integer"):
            report(finite & (values != np.round(values)), col, "is not an integer")
        low, high = rule.get("min"), rule.get("max")
        if low is not None:
            report(finite & (values < low), col, f"is below the minimum {low:g}")
        if high is not None:
            report(finite & (values > high), col, f"is above the maximum {high:g}")
    for col, rule in categorical.items():
        blank = _blank(rows[col])
        if not rule.get("nullable"):
            report(blank, col, "is blank")
        levels = rule.get("values")
        if levels is not None:
            text = rows[col].astype("string").str.strip()
            report(~text.isin(levels).to_numpy(dtype=bool, na_value=False) & ~blank, col,
                   f"is not one of {levels}")
    return problems[:MAX_SHOWN]
