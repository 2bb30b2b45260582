"""Run folders: sorted by time, and never shared by two runs that start in the same second."""

from __future__ import annotations

import re

from churn.data.folders import run_folder_name


def test_runs_in_the_same_second_get_their_own_folders():
    """Two scoring or monitoring runs started at the same instant: two names, both carrying that time."""
    at = 1_780_000_000.25  # 2026-05-28 20:26:40 UTC
    names = {run_folder_name("scores-customer-churn-v3", at) for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"scores-customer-churn-v3-20260528T202640Z-[0-9a-f]{8}", n) for n in names)


def test_names_sort_by_time():
    """A later second sorts after an earlier one, whatever the random part."""
    early, late = run_folder_name("telco-monitor", 1_780_000_000), run_folder_name("telco-monitor", 1_780_000_001)
    assert early[:-9] < late[:-9] and sorted([late, early]) == [early, late]
