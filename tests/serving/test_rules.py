"""The table's rules on rows sent for scoring: the same verdicts as ingest, in plain pandas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.serving.rules import row_problems, rule_breaks

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


@pytest.mark.parametrize("value, shown, what", [
    (float("inf"), "inf", "is not a finite number"),
    (float("-inf"), "-inf", "is not a finite number"),
    ("inf", "'inf'", "is not a finite number"),
    ("Infinity", "'Infinity'", "is not a finite number"),
    ("1e309", "'1e309'", "is not a finite number"),
    ("nan", "'nan'", "is not a finite number"),
    (" -NaN", "' -NaN'", "is not a finite number"),
])
def test_non_finite_numbers_are_refused_even_in_a_nullable_column(value, shown, what):
    """inf and NaN text are neither numbers ingest keeps nor blanks, whatever the column allows."""
    rows = pd.DataFrame({"tenure": [1, 2], "charges": [1.0, value], "plan": ["a", "b"]})
    assert row_problems(rows, RULES) == [f"row 1: charges={shown} {what}"]


@pytest.mark.parametrize("value, expected", [
    (1.9, ["tenure=1.9 is not an integer"]),
    # not cast to 0 first: refused twice, never passing min 0
    (-0.5, ["tenure=-0.5 is not an integer", "tenure=-0.5 is below the minimum 0"]),
    (True, ["tenure=True is not a number"]),
    ("1.5", ["tenure='1.5' is not an integer"]),
    ("three", ["tenure='three' is not a number"]),
])
def test_fractions_booleans_and_text_in_an_integer_column_are_refused(value, expected):
    """As sent (the served model's signature does not cast numeric columns), each is refused."""
    rows = pd.DataFrame({"tenure": [1, value], "charges": [1.0, 2.0], "plan": ["a", "b"]})
    assert row_problems(rows, RULES) == [f"row 1: {e}" for e in expected]


def test_a_column_of_booleans_is_not_numbers():
    """A bool column is refused cell by cell, not read as 0 and 1."""
    rows = pd.DataFrame({"tenure": [True, False], "charges": [1.0, 2.0], "plan": ["a", "b"]})
    assert row_problems(rows, RULES) == ["row 0: tenure=True is not a number", "row 1: tenure=False is not a number"]


def test_whole_numbers_pass_in_an_integer_column_however_spelled():
    """3, 3.0 and the text "3.0" are the integer 3, as ingest reads them."""
    rows = pd.DataFrame({"tenure": [3, 3.0, "3.0", " 4 "], "charges": [1.0] * 4, "plan": ["a"] * 4})
    assert row_problems(rows, RULES) == []


def test_problems_are_structured_json():
    """Each problem carries row, column, value (a non-finite one as text) and ingest's reason code."""
    rows = pd.DataFrame({"tenure": [-1, 2], "charges": [float("inf"), 1.0], "plan": ["a", "z"]})
    assert [p.as_json() for p in rule_breaks(rows, RULES)] == [
        {"row": 0, "column": "tenure", "value": -1, "rule": "out_of_range",
         "message": "row 0: tenure=-1 is below the minimum 0"},
        {"row": 0, "column": "charges", "value": "inf", "rule": "not_finite",
         "message": "row 0: charges=inf is not a finite number"},
        {"row": 1, "column": "plan", "value": "z", "rule": "unknown_category",
         "message": "row 1: plan='z' is not one of ['a', 'b']"},
    ]
