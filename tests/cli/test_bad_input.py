"""Bad input, as a new user meets it: one message, no traceback, before the expensive work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from tests.conftest import ROOT, TELCO
from tests.forkcli import ForkedChurn

pytestmark = pytest.mark.cluster  # each test runs the churn command in a process of its own
JOB = str(ROOT / "jobs" / "train.yaml")


def _train(churn: ForkedChurn, tmp_path: Path, *sets: str, source: Path | str = TELCO,
           where: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``churn train`` on the default job in a forked process (:mod:`tests.forkcli`); ``where``: e.g.
    ``--scheduler ADDRESS``, else the job starts its own LocalCluster."""
    args = ["train", JOB, *where, "--set", f"data.source={source}", "--set", f"data.output={tmp_path / 'ds'}",
            "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    for s in sets:
        args += ["--set", s]
    return churn.run(*args, timeout=300)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _telco_lines(n: int, keep=lambda line: True) -> str:
    lines = TELCO.read_text().splitlines(keepends=True)
    return lines[0] + "".join([ln for ln in lines[1:] if keep(ln)][:n])


@pytest.mark.parametrize("sets, message", [
    (["model.grids.random_forest.n_estimators=[-1]"],
     "model.grids.random_forest: grid point (max_features='sqrt', min_samples_leaf=3, n_estimators=-1; "
     "imbalance none) is refused"),
    (["model.grids.logistic_regression.C=[-1]"],
     "model.grids.logistic_regression: grid point (numeric_basis='linear', C=-1; imbalance none) is refused"),
    (["data.output=/proc/x"], "data.output: cannot write to /proc/x"),
])
def test_refused_before_any_cluster_starts(forked_churn, tmp_path, sets, message):
    """Exit 2, the key and value in one message, no traceback, no cluster."""
    proc = _train(forked_churn, tmp_path, *sets)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert "Dask client ready" not in proc.stderr


def test_an_unwritable_tracking_store_is_named_before_any_cluster(forked_churn, tmp_path):
    """A SQLite store under /proc: exit 1 at once, naming the folder, not after the search."""
    proc = _train(forked_churn, tmp_path, "tracking.uri=sqlite:////proc/x/mlflow.db")
    assert proc.returncode == 1, proc.stderr
    assert "tracking store sqlite:////proc/x/mlflow.db: cannot write to /proc/x" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert "Dask client ready" not in proc.stderr


def test_a_glob_matching_a_directory_is_named(forked_churn, tmp_path):
    """A folder named like a CSV file is refused by name with exit 2."""
    (tmp_path / "in" / "x.csv").mkdir(parents=True)
    proc = _train(forked_churn, tmp_path, source=f"{tmp_path}/in/*.csv")
    assert proc.returncode == 2
    assert "x.csv is a directory, not a CSV file" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content, sets, message", [
    (lambda: _telco_lines(0), [], "no data rows"),
    (lambda: _telco_lines(300, keep=lambda ln: ln.rstrip().endswith(",No")), [], "the table has one class only"),
    (lambda: _telco_lines(400), ["search.cv=100000"],
     "search.cv=100000 needs at least 100000 rows of each class in the training split"),
])
def test_too_few_rows_stop_before_the_search(forked_churn, client, tmp_path, content, sets, message):
    """Header only, one class, or more folds than rows: exit 1 with the counts, before any search
    (on the suite's cluster: the check is the job's, whichever cluster it runs on)."""
    src = tmp_path / "table.csv"
    src.write_text(content())
    proc = _train(forked_churn, tmp_path, *sets, source=src, where=("--scheduler", client.scheduler.address))
    assert proc.returncode == 1, proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert "stage 3/9" not in proc.stderr  # neither the preflight nor the search began


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_a_stopped_run_is_marked_failed_with_one_line(tmp_path, how):
    """SIGTERM to the driver, or Ctrl-C to the whole process group: one line, the MLflow run FAILED."""
    args = [sys.executable, "-m", "churn.cli", "train", JOB, "--set", f"data.output={tmp_path / 'ds'}",
            "--set", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "--set", "model.families=[random_forest]"]
    # as from a terminal: SIGINT handled by default (a non-interactive shell's background job,
    # such as a CI step, would otherwise hand the ignore disposition down)
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        seen.append(line)
        if "stage 4/9 search:" in line or time.monotonic() > deadline:
            break
    assert any("stage 4/9 search:" in ln for ln in seen), "".join(seen)
    time.sleep(2)  # inside the search
    if how == "SIGTERM":
        os.kill(proc.pid, signal.SIGTERM)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    rest = proc.stderr.read()
    code = proc.wait(timeout=120)
    assert code == (143 if how == "SIGTERM" else 130), rest
    assert "Traceback" not in rest
    said = [ln for ln in rest.splitlines() if ln.strip() and " INFO " not in ln]  # beyond the progress log
    assert len(said) == 1 and said[0].startswith("error:"), rest
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = mlflow.search_runs(experiment_names=["customer-churn"], output_format="list")
    assert run.info.status == "FAILED"
    assert run.data.tags["churn.stage"] == "search"


def test_a_binary_source_is_named_before_any_cluster(forked_churn, tmp_path):
    """A binary file in place of the CSV: exit 2, the file named, no traceback."""
    src = tmp_path / "upload.csv"
    src.write_bytes(bytes(range(256)) * 64)
    proc = _train(forked_churn, tmp_path, source=src)
    assert proc.returncode == 2, proc.stderr
    assert "upload.csv: binary data (NUL bytes), not CSV text" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr
    assert "Dask client ready" not in proc.stderr
