"""The table's rules on rows sent for scoring: the same verdicts as ingest, in plain pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.serving.rules import row_problems

RULES = {"numeric": {"tenure": {"integer": True, "nullable": False, "min": 0, "max": None},
                     "charges": {"integer": False, "nullable": True, "min": 0, "max": None}},
         "categorical": {"plan": {"values": ["a", "b"], "nullable": False}}}


def test_good_rows_pass():
    """Integers, a blank nullable number and known levels: no problem."""
    rows = pd.DataFrame({"tenure": [1, 2], "charges": [3.5, np.nan], "plan": ["a", " b "]})
    assert row_problems(rows, RULES) == []


def test_each_rule_names_row_column_and_value():
    """Not an integer, not a number, below the minimum, unknown level, blank, missing column."""
    rows = pd.DataFrame({"tenure": [1.5, -1, 3], "charges": ["x", 1.0, 2.0], "plan": ["a", "c", ""]})
    assert row_problems(rows, RULES) == [
        "row 0: tenure=1.5 is not an integer",
        "row 1: tenure=-1.0 is below the minimum 0",
        "row 0: charges='x' is not a number",
        "row 2: plan='' is blank",
        "row 1: plan='c' is not one of ['a', 'b']",
    ]
    assert row_problems(rows.drop(columns=["plan"]), RULES) == ["missing column(s): plan"]
