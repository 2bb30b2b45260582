"""Ingest on a real LocalCluster: counts reconcile, duplicates go, drift fails before reading."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from distributed import get_task_stream

import churn.data.ingest as ingest_module
from churn.data.dedup import find_duplicates
from churn.data.generate import generate
from churn.data.ingest import SchemaDriftError, ingest
from churn.data.manifest import IngestError
from churn.data.split import load_splits
from tests.conftest import ROOT, TELCO, job_spec


def test_telco_ingest_reconciles_and_keeps_blanks(client, tmp_path):
    """All 7,043 Telco rows are kept; the 11 blank TotalCharges are NaN in the Parquet data."""
    ds = ingest(job_spec(tmp_path, TELCO), client)
    man = ds.manifest
    assert man.rows_read == 7043
    assert man.rows_read == man.rows_kept + man.rows_quarantined + man.duplicates_removed
    assert man.rows_kept == 7043
    data = pd.read_parquet(ds.data_path)
    assert len(data) == 7043
    assert data["TotalCharges"].isna().sum() == 11
    assert json.loads((ds.root / "manifest.json").read_text())["files"][0]["sha256"] == (
        "16320c9c1ec72448db59aa0a26a0b95401046bef5d02fd3aeb906448e3055e91")


def test_duplicate_ids_are_removed_first_kept_and_conflicting_labels_quarantined(client, tmp_path):
    """An id repeated with other values and the same label is removed, and the first occurrence (by file and
    line) stays with its own values; an id repeated with the other label is no duplicate: both its rows are
    quarantined as conflicting_label, with their lines and values. The counts, measured on the files, add up."""
    lines = TELCO.read_text().splitlines(keepends=True)
    first, other = lines[5].split(","), lines[7].split(",")
    later = [*first[:5], str(int(first[5]) + 30), *first[6:18], "20.05", *first[19:]]  # same id and label
    flipped = lines[7].replace(",No\n", ",Yes\n")
    assert flipped != lines[7] and first[-1] == later[-1] == "Yes\n"
    src = tmp_path / "dups.csv"
    src.write_text(lines[0] + "".join(lines[1:300]) + ",".join(later) + flipped)
    ds = ingest(job_spec(tmp_path, src, "data.blocksize=4096"), client)
    man = ds.manifest
    assert man.partitions > 5  # small blocks: the repeats sit in other partitions
    assert (man.rows_read, man.rows_kept, man.rows_quarantined, man.duplicates_removed) == (301, 298, 2, 1)
    assert man.quarantined_by_reason == {"conflicting_label": 2} and man.kept_distinct_ids == 298
    data = pd.read_parquet(ds.data_path).set_index("customerID")
    assert data.index.is_unique and other[0] not in data.index
    assert (data.loc[first[0], "tenure"], data.loc[first[0], "MonthlyCharges"]) == (2, 70.7)  # line 6's values
    quarantine = pd.read_parquet(ds.quarantine_path)
    assert quarantine["_line"].tolist() == [8, 302]
    assert (quarantine["customerID"] == other[0]).all() and (quarantine["_reasons"] == "conflicting_label").all()
    assert quarantine["Churn"].tolist() == ["No", "Yes"]
    values = quarantine[["tenure", "MonthlyCharges", "Contract"]].values.tolist()
    assert values == [["22", "89.1", "Month-to-month"]] * 2


def _keep_every_repeat(staging, blocks, lo, hi, id_column):
    """The duplicate check, wrong: it names no repeat (runs on the workers, in place of find_duplicates)."""
    return {}, find_duplicates(staging, blocks, lo, hi, id_column)[1]


def _drop_a_loner(staging, blocks, lo, hi, id_column):
    """The duplicate check, wrong: it also names the first row of the first block, an id seen once."""
    repeats, conflicts = find_duplicates(staging, blocks, lo, hi, id_column)
    if lo == 0:
        repeats[blocks[0]] = np.union1d(repeats.get(blocks[0], np.zeros(0, np.int64)), [0]).astype(np.int64)
    return repeats, conflicts


@pytest.mark.parametrize("wrong, message", [(_keep_every_repeat, r"the 300 kept rows hold 299 distinct ids"),
                                            (_drop_a_loner, r"the clean rows hold 299 distinct ids, but 298 are kept")])
def test_a_wrongly_named_drop_fails_the_ingest(client, tmp_path, monkeypatch, wrong, message):
    """The rows the duplicate check names are counted apart from it, on the files written: a check that keeps
    a repeat, or drops an id seen once, fails the ingest and publishes nothing."""
    lines = TELCO.read_text().splitlines(keepends=True)
    src = tmp_path / "dups.csv"
    src.write_text("".join(lines[:300]) + lines[9])
    monkeypatch.setattr(ingest_module, "find_duplicates", wrong)
    with pytest.raises(IngestError, match=f"duplicate count not confirmed: {message}.*nothing was published"):
        ingest(job_spec(tmp_path, src, "data.blocksize=4096"), client)
    assert not [p.name for p in (tmp_path / "datasets").iterdir()]


def test_file_without_declared_columns_is_refused(client, tmp_path):
    """A file lacking a declared column is refused, naming the file and the column."""
    frame = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(20).drop(columns=["Contract"])
    src = tmp_path / "no-contract.csv"
    frame.to_csv(src, index=False)
    with pytest.raises(SchemaDriftError, match=r"no-contract.csv: missing column\(s\) Contract"):
        ingest(job_spec(tmp_path, src), client)
    assert not (tmp_path / "datasets").exists() or not any((tmp_path / "datasets").iterdir())


# --------------------------------------------------------------------------- generated data
INGEST_JOB = ROOT / "jobs" / "ingest.yaml"


@pytest.fixture(scope="module")
def dirty_files(tmp_path_factory):
    """30,000 generated rows over 3 files with 3 % known faults (every kind)."""
    out = tmp_path_factory.mktemp("dirty")
    generate(out, rows=30_000, files=3, seed=11, dirty=0.03)
    return out


def test_dirty_data_exact_counts_per_reason(client, tmp_path, dirty_files):
    """Each fault kind is found exactly as often as it was injected; counts reconcile."""
    expected = json.loads((dirty_files / "expected.json").read_text())
    job = job_spec(tmp_path, f"{dirty_files}/*.csv", "data.blocksize=200000", base=INGEST_JOB)
    ds = ingest(job, client)
    man = ds.manifest
    assert man.partitions > 6
    assert man.rows_read == 30_000
    assert man.quarantined_by_reason == expected["quarantined_by_reason"]
    assert man.rows_quarantined == expected["rows_quarantined"]
    assert man.duplicates_removed == expected["duplicates_removed"]
    assert man.rows_kept == expected["rows_kept"]
    assert man.rows_read == man.rows_kept + man.rows_quarantined + man.duplicates_removed

    quarantine = pd.read_parquet(ds.quarantine_path)
    assert len(quarantine) == expected["rows_quarantined"]
    # every quarantined row names its file and physical line, and that line holds the row
    sample = quarantine.sample(40, random_state=0)
    for _, row in sample.iterrows():
        line = open(row["_source"]).read().split("\n")[row["_line"] - 1]
        if row["_reasons"] == "wrong_field_count":
            assert line == row["_raw"]
        else:
            assert line.split(",")[0] == (row["customerID"] or "")
    data = pd.read_parquet(ds.data_path)
    assert len(data) == expected["rows_kept"]
    assert data["customerID"].is_unique


def test_bad_row_budget_aborts_and_publishes_nothing(client, tmp_path, dirty_files):
    """Over the budget: an error with the counts, and no dataset on disk."""
    job = job_spec(tmp_path, f"{dirty_files}/*.csv", "data.max_bad_fraction=0.01", base=INGEST_JOB)
    with pytest.raises(IngestError, match=r"bad-row budget exceeded: \d+ of 30000 rows"):
        ingest(job, client)
    assert list((tmp_path / "datasets").iterdir()) == []


def test_schema_drift_fails_before_any_data_is_read(client, tmp_path, dirty_files):
    """One drifted file among good ones: refused by its header, no task runs on the cluster."""
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted(dirty_files.glob("*.csv")):
        (src / f.name).write_bytes(f.read_bytes())
    lines = (src / "churn-0001.csv").read_text().split("\n")
    lines[0] = lines[0].replace("PaymentMethod", "PayMethod")
    (src / "churn-0001.csv").write_text("\n".join(lines))
    job = job_spec(tmp_path, f"{src}/*.csv", base=INGEST_JOB)
    with get_task_stream(client) as stream:
        with pytest.raises(SchemaDriftError) as err:
            ingest(job, client)
    msg = str(err.value)
    assert "churn-0001.csv: missing column(s) PaymentMethod" in msg
    assert "churn-0001.csv: unexpected column(s) PayMethod" in msg
    assert "churn-0000.csv" not in msg
    assert stream.data == []


def test_rerun_on_unchanged_inputs_reuses_the_dataset(client, tmp_path, dirty_files):
    """The second ingest reuses the published dataset untouched; a changed file rebuilds."""
    job = job_spec(tmp_path, f"{dirty_files}/*.csv", base=INGEST_JOB)
    first = ingest(job, client)
    stamp = (first.root / "manifest.json").stat().st_mtime_ns
    second = ingest(job, client)
    assert second.reused and second.root == first.root
    assert (second.root / "manifest.json").stat().st_mtime_ns == stamp


@pytest.mark.cluster
def test_killed_run_leaves_nothing_a_later_run_trusts(forked_churn, tmp_path):
    """SIGKILL mid-ingest: no dataset is published; the next run cleans up and completes."""
    src = tmp_path / "big"
    generate(src, rows=200_000, files=2, seed=5, dirty=0.01)  # 1 MB blocks: the kill comes with ~20 to go
    out = tmp_path / "datasets"
    args = ["ingest", str(INGEST_JOB), "--set", f"data.source={src}/*.csv", "--set", f"data.output={out}",
            "--set", "data.blocksize=1000000"]
    # `churn ingest` (its own LocalCluster) in a process group forked from one that imported churn (tests.forkcli)
    proc = forked_churn.start(*args, cwd=ROOT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        staging = list(out.glob(".staging-*/data/*.parquet")) if out.exists() else []
        if len(staging) >= 2:
            break
        time.sleep(0.05)
    proc.kill()  # SIGKILL to its process group: the driver and its cluster's workers
    assert staging, "ingest never reached the writing stage"
    assert not list(out.glob("dataset-*")), "a killed run published a dataset"
    assert list(out.glob(".staging-*"))

    done = forked_churn.run(*args, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert not list(out.glob(".staging-*"))
    [dataset] = list(out.glob("dataset-*"))
    man = json.loads((dataset / "manifest.json").read_text())
    expected = json.loads((src / "expected.json").read_text())
    assert man["rows_kept"] == expected["rows_kept"]


def test_split_is_stable_when_files_are_appended(client, tmp_path):
    """Customers keep their split when a new file joins the source."""
    src = tmp_path / "src"
    generate(src, rows=6_000, files=2, seed=2)
    first = src / "churn-0000.csv"
    only = job_spec(tmp_path / "one", first, base=INGEST_JOB)
    both = job_spec(tmp_path / "two", f"{src}/*.csv", base=INGEST_JOB)
    for job in (only, both):
        job.split.validation = 0.1
    a, b = (load_splits(str(ingest(j, client).data_path), j.split, j.seed).compute().set_index("customerID")["_split"]
            for j in (only, both))
    assert len(b) == 6_000 and len(a) == 3_000
    assert (b.loc[a.index] == a).all()
    assert set(a.unique()) == {"train", "validation", "test"}
