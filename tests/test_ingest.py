"""Ingest on a real LocalCluster: counts reconcile, duplicates go, drift fails before reading."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from churn.ingest import SchemaDriftError, ingest

from .conftest import TELCO, job_spec


def test_telco_ingest_reconciles_and_keeps_blanks(client, tmp_path):
    """All 7,043 Telco rows are kept; the 11 blank TotalCharges are NaN in the Parquet data."""
    ds = ingest(job_spec(tmp_path, TELCO), client)
    man = ds.manifest
    assert man["rows_read"] == 7043
    assert man["rows_read"] == man["rows_kept"] + man["rows_quarantined"] + man["duplicates_removed"]
    assert man["rows_kept"] == 7043
    data = pd.read_parquet(ds.data_path)
    assert len(data) == 7043
    assert data["TotalCharges"].isna().sum() == 11
    assert json.loads((ds.root / "manifest.json").read_text())["files"][0]["sha256"] == (
        "16320c9c1ec72448db59aa0a26a0b95401046bef5d02fd3aeb906448e3055e91")


def test_duplicate_ids_are_removed_first_kept(client, tmp_path):
    """A repeated customerID is removed; the first occurrence (by file and line) stays."""
    lines = TELCO.read_text().splitlines(keepends=True)
    dup = lines[5].replace(",No\n", ",Yes\n") if lines[5].endswith(",No\n") else lines[5]
    src = tmp_path / "dups.csv"
    src.write_text(lines[0] + "".join(lines[1:300]) + dup + lines[7])
    ds = ingest(job_spec(tmp_path, src, "data.blocksize=4096"), client)
    man = ds.manifest
    assert man["partitions"] > 5  # small blocks: the duplicates sit in other partitions
    assert man["rows_read"] == 301
    assert man["duplicates_removed"] == 2
    assert man["rows_kept"] == 299
    data = pd.read_parquet(ds.data_path)
    assert data["customerID"].is_unique
    first = lines[5].split(",")[0]
    assert data.loc[data["customerID"] == first, "_label"].item() == int(lines[5].rstrip().endswith("Yes"))


def test_file_without_declared_columns_is_refused(client, tmp_path):
    """A file lacking a declared column is refused, naming the file and the column."""
    frame = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(20).drop(columns=["Contract"])
    src = tmp_path / "no-contract.csv"
    frame.to_csv(src, index=False)
    with pytest.raises(SchemaDriftError, match=r"no-contract.csv: missing column\(s\) Contract"):
        ingest(job_spec(tmp_path, src), client)
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())
