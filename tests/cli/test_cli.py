"""The `churn` commands as a user runs them: output, exit codes, files written."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import MLC, ROOT

pytestmark = pytest.mark.cluster  # each test runs the churn command in a process of its own


@pytest.fixture
def _churn(forked_churn) -> Callable[..., subprocess.CompletedProcess]:
    """``churn ARGS`` in a forked process (:mod:`tests.forkcli`)."""
    def run(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
        return forked_churn.run(*args, cwd=cwd, timeout=300)
    return run


def test_generate_then_ingest_reports_the_expected_counts(_churn, tmp_path):
    """`churn generate --dirty` then `churn ingest`: the summary shows the counts in expected.json."""
    out = tmp_path / "gen"
    gen = _churn("generate", "--rows", "3000", "--files", "2", "--out", str(out), "--seed", "3", "--dirty", "0.02")
    assert gen.returncode == 0, gen.stderr
    expected = json.loads((out / "expected.json").read_text())
    ing = _churn("ingest", str(ROOT / "jobs" / "ingest.yaml"), "--set", f"data.source={out}/*.csv",
                 "--set", f"data.output={tmp_path / 'ds'}")
    assert ing.returncode == 0, ing.stderr
    assert re.search(rf"rows kept\s+│\s+{expected['rows_kept']:,}\s", ing.stdout), ing.stdout
    assert re.search(rf"duplicates removed\s+│\s+{expected['duplicates_removed']:,}\s", ing.stdout)
    assert re.search(rf"rows quarantined\s+│\s+{expected['rows_quarantined']:,}\s", ing.stdout)


def test_generate_telecom_large_writes_its_truth_and_refuses_faults(_churn, tmp_path):
    """`churn generate --shape telecom-large` writes CSVs and truth.parquet; an unknown shape or
    --dirty with it exits 2 with one line."""
    out = tmp_path / "large"
    gen = _churn("generate", "--shape", "telecom-large", "--rows", "500", "--files", "2", "--out", str(out))
    assert gen.returncode == 0, gen.stderr
    assert sorted(p.name for p in out.iterdir()) == ["expected.json", "telecom-0000.csv", "telecom-0001.csv",
                                                     "truth.parquet"]
    assert "true probabilities in" in gen.stdout
    bad = _churn("generate", "--shape", "huge", "--rows", "10", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--shape must be telco or telecom-large, not 'huge'" in bad.stderr
    dirty = _churn("generate", "--shape", "telecom-large", "--dirty", "0.1", "--rows", "10", "--out", str(out))
    assert dirty.returncode == 2 and "--dirty injects faults into the telco shape only" in dirty.stderr


def test_ingest_with_drifted_header_exits_2_naming_file_and_column(_churn, tmp_path):
    """A renamed column: exit code 2, one message with the file and the column, no cluster."""
    src = tmp_path / "mlc.csv"
    text = MLC.read_text().replace("total_day_calls", "day_calls", 1)
    src.write_text(text)
    proc = _churn("ingest", str(ROOT / "jobs" / "train-mlc.yaml"), "--set", f"data.source={src}",
                  "--set", f"data.output={tmp_path / 'ds'}")
    assert proc.returncode == 2
    assert "mlc.csv: missing column(s) total_day_calls" in proc.stderr
    assert "unexpected column(s) day_calls" in proc.stderr
    assert "Dask client ready" not in proc.stderr


def test_schema_infer_prints_a_schema_block(_churn):
    """`churn schema infer` prints YAML naming the id, the label and typed columns."""
    proc = _churn("schema", "infer", str(ROOT / "data" / "telco" / "Telco-Customer-Churn.csv"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("schema:\n  id: customerID")
    assert "TotalCharges: {min: 0, nullable: true}" in proc.stdout
    missing = _churn("schema", "infer", "/no/such.csv")
    assert missing.returncode == 2 and "no such file: /no/such.csv" in missing.stderr
