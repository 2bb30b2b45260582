"""Commands that only read a tracking store create none: a missing or foreign store is one line."""

from __future__ import annotations

import os
import sqlite3

import pytest

from churn.config import ConfigError
from churn.tracking.store import check_readable
from tests.conftest import ROOT


def _tree(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_missing_or_foreign_store_is_named_and_nothing_is_created(tmp_path):
    """No file, no folder, a text file named mlflow.db, an SQLite file without MLflow's tables:
    one ConfigError each, naming the path, and the folder holds what it held before."""
    (tmp_path / "text.db").write_text("not a database\n")
    with sqlite3.connect(tmp_path / "other.db") as con:
        con.execute("CREATE TABLE t (x)")
    before = _tree(tmp_path)
    for uri, message in ((f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}", "there is no such file"),
                         (str(tmp_path / "mlruns"), "there is no such folder"),
                         (f"sqlite:///{tmp_path / 'text.db'}", "text.db is not an MLflow tracking store: not an "
                                                                "SQLite database"),
                         (f"sqlite:///{tmp_path / 'other.db'}", "other.db is not an MLflow tracking store: an SQLite "
                                                                 "database without MLflow's tables")):
        with pytest.raises(ConfigError, match=message):
            check_readable(uri)
    assert _tree(tmp_path) == before


@pytest.mark.cluster  # runs the churn command in a subprocess
def test_status_without_a_store_creates_nothing(forked_churn, tmp_path):
    """`churn status` in a folder with no store (the default ./mlflow.db): exit 2, one line, and
    the folder stays empty (it used to get a database and an artifact folder)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    out = forked_churn.run("status", "0" * 32, cwd=tmp_path, timeout=120, env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"error: no tracking store at {tmp_path / 'mlflow.db'}: there is no such file " \
                                 "(nothing was created)"
    assert _tree(tmp_path) == []


def test_verify_without_a_store_creates_nothing(tmp_path):
    """`churn verify` only reads: with no store at its tracking URI it is one line and exit 2, and
    it creates no database there (MLflow used to create one before "model not found")."""
    from typer.testing import CliRunner

    from churn.cli.app import app

    db = tmp_path / "mlflow.db"
    out = CliRunner().invoke(app, ["verify", "models:/m@champion", "--tracking-uri", f"sqlite:///{db}"])
    assert out.exit_code == 2, out.output
    assert f"no tracking store at {db}: there is no such file" in out.output
    assert _tree(tmp_path) == []


def test_verify_names_a_credential_in_its_tracking_uri_as_status_does():
    """--tracking-uri with a password: one line, exit 2, pydantic's "Value error, " prefix cut as in
    churn status and churn serve, and the password not repeated."""
    from typer.testing import CliRunner

    from churn.cli.app import app

    out = CliRunner().invoke(app, ["verify", "models:/m/1", "--tracking-uri", "https://u:hunter2@example.com/"])
    assert out.exit_code == 2, out.output
    assert out.output.startswith("error: --tracking-uri: the tracking URI holds a credential (a password")
    assert "hunter2" not in out.output
