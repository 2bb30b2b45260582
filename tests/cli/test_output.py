"""What the commands print: summaries that fit the width and split no word, messages printed
verbatim, the default economics and the quarantine announced, ``churn status`` of a finished run,
``churn serve`` of a model that is not there, one log line per family when not in a terminal."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from churn.cli import summary
from churn.cli.progress import FitProgress
from churn.config.families import spelled
from churn.jobs.graph import train_graph
from churn.modeling.preflight import round_trip_once
from churn.modeling.search_cache import search_key
from churn.tracking.store import ui_hint
from tests.conftest import ROOT, job_spec

HEAVY = {"sklearn", "mlflow", "distributed", "pandas", "matplotlib"}  # and churn.modeling


def render(renderable, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def churn(*args: str, cwd: Path = ROOT, importtime: bool = False) -> subprocess.CompletedProcess:
    flags = ["-X", "importtime"] if importtime else []
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # mlflow.set_tracking_uri sets it
    return subprocess.run([sys.executable, *flags, "-m", "churn.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "100"})


def heavy_imports(importtime_stderr: str) -> set[str]:
    """The heavy modules a ``-X importtime`` trace shows were imported."""
    names = {line.split("|")[-1].strip() for line in importtime_stderr.splitlines() if line.startswith("import time:")}
    return {n for n in names if n.split(".")[0] in HEAVY or n.startswith("churn.modeling")}


def param_words(result) -> set[str]:
    return {f"{spelled(k)}={v}" for res in result.families.values() for k, v in res.best_params.items()
            if k not in ("resample__method", "model__class_weight")}


@pytest.mark.parametrize("width", [80, 100, 140])
def test_train_summary_fits_the_width_and_splits_no_word(finished_train, width):
    job, result = finished_train
    text = render(summary.train_summary(job, result, 12.3, width), width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    words = {w.strip("│┃,;") for line in lines for w in line.split()}
    assert param_words(result) <= words  # every parameter whole, on one line
    assert result.run_id in words and f"models:/customer-churn/{result.model_version}" in words
    below = [line for line in lines if "best params" in line and "│" not in line and "┃" not in line]
    if width == 80:  # no room beside the other columns: the parameters move below the table
        assert {f.split()[0].rstrip(":") for f in below} >= set(result.families)
    if width == 140:  # room: they stay in their column
        assert not below


def test_train_summary_announces_default_economics_and_quarantine(finished_train, tmp_path, telco_subset):
    job, result = finished_train
    text = " ".join(render(summary.train_summary(job, result, 1.0, 100), 100).split())
    share = f"{result.test.metrics['contacted_fraction']:.1%}"
    assert "built-in economics" in text and f"would contact {share} of customers" in text
    assert "evaluation.economics in the job file" in text
    reasons = result.dataset.manifest.quarantined_by_reason
    assert reasons and sum(reasons.values()) == 2
    for reason, count in reasons.items():
        assert f"quarantined: {reason} │ {count}" in text
    own = job_spec(tmp_path, telco_subset)  # jobs/train.yaml sets evaluation.economics
    assert summary.economics_note(own, result) is None


def test_preflight_is_its_own_stage_and_kept_for_unchanged_data(finished_train):
    job, result = finished_train
    assert "preflight" in result.seconds and not result.preflight_reused
    assert train_graph(job, result).nodes["preflight"][-1].endswith(" s")
    key = search_key(job, result.dataset.manifest.dataset, result.rows["search"])
    assert round_trip_once(job, None, None, 0, key)  # passed for this key: not run again (no rows needed)


@pytest.mark.cluster
def test_status_of_a_finished_run_without_heavy_imports(finished_train):
    """`churn status` names the version, the champion, the threshold and the test ROC AUC, and reads
    the SQLite store without importing MLflow or scikit-learn."""
    job, result = finished_train
    proc = churn("status", result.run_id, "--tracking-uri", job.tracking.uri, importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = " ".join(proc.stdout.split())
    assert f"models:/customer-churn/{result.model_version}" in out
    assert f"champion │ {result.champion.name}" in out
    assert f"decision threshold │ {result.threshold.value:.3f}" in out
    assert f"test ROC AUC │ {result.test.metrics['roc_auc']:.4f}" in out
    assert heavy_imports(proc.stderr) == set()


@pytest.mark.cluster
@pytest.mark.parametrize("args", [["--help"], ["graph", "jobs/train.yaml"]])
def test_fast_commands_import_no_heavy_library(args):
    proc = churn(*args, importtime=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "import time:" in proc.stderr  # the trace is there to read
    assert heavy_imports(proc.stderr) == set()


def test_the_heavy_import_check_can_fail():
    trace = "import time:       100 |        200 |   sklearn.base\nimport time: 1 | 2 | mlflow"
    assert heavy_imports(trace) == {"sklearn.base", "mlflow"}


@pytest.mark.cluster
def test_messages_print_verbatim(tmp_path):
    proc = churn("schema", "infer", "pip install 'churn[k8s]' [bold]x[/].csv", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: no such file: pip install 'churn[k8s]' [bold]x[/].csv"


@pytest.mark.cluster
def test_serve_without_such_model_is_one_line_and_creates_nothing(finished_train, tmp_path):
    proc = churn("serve", "-m", "models:/no-such-model@champion", cwd=tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "models:/no-such-model@champion" in proc.stderr and store in proc.stderr
    assert list(tmp_path.iterdir()) == []
    job, _ = finished_train
    db = Path(job.tracking.uri.removeprefix("sqlite:///"))
    before = sorted(p.name for p in db.parent.iterdir())
    proc = churn("serve", "-m", "models:/no-such-model/1", "--tracking-uri", job.tracking.uri, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and job.tracking.uri in proc.stderr
    assert sorted(p.name for p in db.parent.iterdir()) == before and list(tmp_path.iterdir()) == []


def test_each_family_is_logged_as_it_finishes_when_not_a_terminal(caplog):
    progress = FitProgress(Console(file=io.StringIO()))
    with caplog.at_level(logging.INFO, logger="churn.search"), progress:
        progress("svm", 0, 2)
        progress("mlp", 0, 1)
        progress("mlp", 1, 1)
        assert [r.getMessage().split(":")[0] for r in caplog.records] == ["search mlp"]  # svm still running
        progress("svm", 1, 2)
        progress("svm", 2, 2)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["search mlp", "search svm"]


def test_the_mlflow_ui_command_works_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hint = ui_hint("sqlite:///store/mlflow.db")
    exe = hint.split()[0]
    assert Path(exe).is_absolute() and Path(exe).is_file()
    assert f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}" in hint.split()
    assert str(tmp_path / "store" / "mlruns") in hint.split()


def test_status_while_waiting_shows_stage_and_time():
    import time

    from churn.tracking.run_state import RunStatus

    st = RunStatus("abc", "job", "RUNNING", "search", None, time.time() - 65, None, {})
    line = summary.waiting_line(st)
    assert line.startswith("stage search, running for 6") and "abc" in line
    assert summary.waiting_line(RunStatus("abc", "job", "RUNNING", None, None, None, None, {})).startswith("stage -")
