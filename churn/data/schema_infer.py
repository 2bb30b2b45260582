"""Infer a starting ``schema:`` block for a job spec from a sample of a CSV file.

A column with blanks in the sample is ``nullable`` (numeric ``{nullable: true}``, categorical
``{values: [...], nullable: true}``), a numeric column with no negative value in the sample gets
``min: 0``: the block then trains on the sampled rows without quarantining any of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

MAX_LEVELS = 60  # more distinct values than this (and not numeric): an id or free text
LABEL_NAMES = re.compile(r"^(churn|churned|label|target|exited|attrition|left)$", re.I)
POSITIVE = ("yes", "true", "1", "churned", "y")


@dataclass
class ColumnGuess:
    name: str
    kind: str  # id | label | integer | float | categorical | text
    levels: list[str]
    blanks: int
    note: str = ""
    minimum: float | None = None  # the smallest number in the sample (numeric columns)


def _is_number(values: pd.Series) -> tuple[bool, bool]:
    parsed = pd.to_numeric(values, errors="coerce")
    if parsed.isna().any():
        return False, False
    return True, bool((parsed == parsed.round()).all())


def infer_columns(path: str, sample_rows: int = 50_000) -> list[ColumnGuess]:
    """Guess each column's role and type from the first ``sample_rows`` rows."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, nrows=sample_rows)
    guesses = []
    for name in frame.columns:
        col = frame[name].str.strip()
        blanks = int((col == "").sum())
        present = col[col != ""]
        numeric, integer = _is_number(present) if len(present) else (False, False)
        levels = sorted(present.unique().tolist())
        if LABEL_NAMES.match(name) and len(levels) == 2:
            kind, note = "label", f"values {levels}"
        elif numeric:
            kind = "integer" if integer else "float"
            note = f"range {pd.to_numeric(present).min():g} .. {pd.to_numeric(present).max():g}"
            if integer and len(levels) == 2 and set(levels) <= {"0", "1"}:
                note = "0/1 flag"
        elif len(levels) > MAX_LEVELS:
            unique = present.is_unique and len(present) == len(col)
            kind = "id" if unique else "text"
            note = "unique per row" if unique else f"{len(levels)} distinct values"
        else:
            kind, note = "categorical", f"{len(levels)} levels"
        if blanks:
            note += f"; {blanks} blank in sample"
        minimum = float(pd.to_numeric(present).min()) if kind in ("integer", "float") else None
        guesses.append(ColumnGuess(name, kind, levels if kind in ("categorical", "label") else [], blanks, note,
                                   minimum))
    return guesses


def _q(value: str) -> str:
    """YAML-safe scalar: quote anything YAML would read as a bool, number or null."""
    import yaml

    loaded = yaml.safe_load(value) if value else None
    return value if isinstance(loaded, str) and loaded == value and ":" not in value else f'"{value}"'


def schema_yaml(guesses: list[ColumnGuess]) -> str:
    """A ``schema:`` block to paste into a job spec, each column commented with its inferred type."""
    ids = [g for g in guesses if g.kind == "id"]
    labels = [g for g in guesses if g.kind == "label"]
    lines = ["schema:"]
    lines.append(f"  id: {ids[0].name if ids else 'null'}"
                 + ("   # unique per row in the sample" if ids else "   # none found: a row key is derived"))
    if labels:
        lab = labels[0]
        pos = next((v for v in lab.levels if v.lower() in POSITIVE), lab.levels[-1])
        neg = next(v for v in lab.levels if v != pos)
        lines += [f"  label: {lab.name}   # {lab.note}", f"  positive: {_q(pos)}", f"  negative: {_q(neg)}"]
    else:
        lines += ["  label: CHANGE_ME   # no two-valued churn/label/target column found",
                  '  positive: "Yes"', '  negative: "No"']
    lines.append("  numeric:")
    for g in guesses:
        if g.kind in ("integer", "float"):
            parts = ["integer: true"] if g.kind == "integer" else []
            parts += ["min: 0"] if g.minimum is not None and g.minimum >= 0 else []
            parts += ["nullable: true"] if g.blanks else []
            lines.append(f"    {g.name}: {{{', '.join(parts)}}}   # {g.kind}, {g.note}")
    lines.append("  categorical:")
    for g in guesses:
        if g.kind == "categorical":
            levels = f"[{', '.join(_q(v) for v in g.levels)}]"
            rule = f"{{values: {levels}, nullable: true}}" if g.blanks else levels
            lines.append(f"    {g.name}: {rule}   # {g.note}")
    ignored = [g for g in guesses if g.kind == "text" or (g.kind == "id" and g is not (ids[0] if ids else None))]
    if ignored:
        lines.append("  ignore:")
        for g in ignored:
            lines.append(f"    - {g.name}   # {g.kind}, {g.note}")
    return "\n".join(lines) + "\n"
