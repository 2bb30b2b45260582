"""Feature rules the config layer knows: the sum groups a table's column names imply.

A leaf module (no scikit-learn import), so the stage graph and the preflight can name the
groups without loading the modeling code; :class:`churn.modeling.features.GroupSums` adds them.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


def name_groups(numeric: list[str] | tuple[str, ...], taken: list[str] | tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Numeric columns grouped by the last word of their names, for :class:`~churn.modeling.features.GroupSums`:
    ``{"sum_charge": ["total_day_charge", "total_eve_charge", ...]}``. Words split at ``_``,
    spaces, dashes and camelCase; only groups of two or more columns; a new name that is
    already a column (numeric or one of ``taken``) gets a trailing ``_``."""
    groups: dict[str, list[str]] = {}
    for col in numeric:
        words = _WORD.findall(str(col))
        if words:
            groups.setdefault(words[-1].lower(), []).append(col)
    out: dict[str, list[str]] = {}
    for word, cols in groups.items():
        if len(cols) >= 2:
            name = f"sum_{word}"
            while name in numeric or name in taken or name in out:
                name += "_"
            out[name] = cols
    return out
