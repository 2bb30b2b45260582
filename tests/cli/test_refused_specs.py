"""Specs the CLI refuses before any cluster starts: exit 2 and one line, no traceback, no secret.

In-process (typer's CliRunner), with ``--scheduler`` at a closed port: a check that let a spec
through would end in a connection error (exit 1), never in a cluster started by the test."""

from __future__ import annotations

import os
from pathlib import Path

import dask.config
import pytest
from typer.testing import CliRunner

from churn.cli.app import app
from tests.conftest import ROOT, TELCO

JOB = str(ROOT / "jobs" / "train.yaml")
SECRET = "hunter2-s3cr3t"


def _laughs(tmp: Path) -> Path:
    items = ["&a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        items.append(f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp / "laughs.yaml"
    path.write_text(Path(JOB).read_text().replace("numeric_basis: [linear, spline]",
                                                  f"numeric_basis: [{', '.join(items)}]"))
    return path


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.csv")
    return tmp / "pipe.csv"


def _latin1_cluster(tmp: Path) -> Path:
    (tmp / "cluster.yaml").write_bytes((ROOT / "cluster" / "local.yaml").read_bytes() + "# Café\n".encode("latin-1"))
    return tmp / "cluster.yaml"


def _reserved_header(tmp: Path) -> Path:
    lines = TELCO.read_text().splitlines(keepends=True)[:30]
    (tmp / "table.csv").write_text(lines[0].replace("customerID", "_label", 1) + "".join(lines[1:]))
    return tmp / "table.csv"


def _run(command: str, tmp: Path, *args: str, where: tuple[str, ...] = ("--scheduler", "tcp://127.0.0.1:9")
         ) -> list[str]:
    """``churn COMMAND`` on the default job with small, local settings; ``args`` come last (a later
    --set wins)."""
    sets = [f"data.source={TELCO}", f"data.output={tmp / 'ds'}", f"tracking.uri=sqlite:///{tmp / 'm.db'}",
            "model.families=[logistic_regression]"]
    return [command, *args[:1], *where, *(x for s in sets for x in ("--set", s)), *args[1:]]


@pytest.mark.parametrize("args, message", [
    (lambda t: _run("train", t, JOB, "--set", "tracking.alias=v1"), "tracking.alias: MLflow refuses 'v1'"),
    (lambda t: _run("train", t, JOB, "--set", "tracking.registered_model=''"),
     "tracking.registered_model: MLflow refuses"),
    (lambda t: _run("train", t, JOB, "--set", "evaluation.top_k=[0]"), "evaluation.top_k: 0.0 is not a fraction"),
    (lambda t: _run("train", t, JOB, "--set", "data.blocksize=abc"), "data.blocksize: blocksize 'abc' is not a byte"),
    (lambda t: _run("train", t, JOB, "--set", "schema.ignore=[_split]"), "column '_split' has a name churn gives its"),
    (lambda t: _run("train", t, JOB, "--set", f"data.source=https://u:{SECRET}@example.com/churn.csv"),
     "data.source: the source holds a credential (a password before the host)"),
    (lambda t: _run("train", t, JOB, "--set", f"tracking.uri=https://mlflow.example.com/?token={SECRET}"),
     "tracking.uri: the tracking URI holds a credential (the query parameter 'token')"),
    (lambda t: _run("ingest", t, JOB, "--set", f"data.source={_fifo(t)}"), "pipe.csv is not a regular file"),
    (lambda t: _run("train", t, str(_laughs(t))), "laughs.yaml: more than 100,000 values once its YAML aliases"),
    (lambda t: _run("train", t, JOB, where=("--cluster", str(_latin1_cluster(t)))),
     "cluster.yaml is not UTF-8 text (byte 0xe9"),
    (lambda t: ["schema", "infer", str(_reserved_header(t))], "column '_label' has a name churn gives its own"),
    (lambda t: ["serve", "--model-uri", f"s3://bucket/model?X-Amz-Signature={SECRET}"],
     "--model-uri holds a credential (the query parameter 'X-Amz-Signature')"),
])
@pytest.mark.timeout(180)  # a named pipe used to hang the preflight
def test_refused_in_one_line_with_exit_2(tmp_path, monkeypatch, args, message):
    """Each of these failed late (after the cluster or the whole job), hung, or printed a traceback."""
    monkeypatch.chdir(tmp_path)  # nothing lands in the repository
    with dask.config.set({"churn.cluster.connect-timeout": "1s"}):
        result = CliRunner().invoke(app, args(tmp_path))
    said = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.stderr
    assert len(said) == 1 and said[0].startswith("error:"), result.stderr
    assert message in said[0]
    assert SECRET not in result.output + result.stderr and len(said[0]) < 700
