"""`churn serve` before any server starts: the exposure warning and a model that is not there."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from churn.cli.app import app
from churn.jobs.serve import exposure_warning


@pytest.mark.parametrize("host, tls, warns", [
    ("0.0.0.0", False, True), ("::", False, True), ("10.1.2.3", False, True), ("serving.example", False, True),
    ("0.0.0.0", True, False), ("127.0.0.1", False, False), ("127.0.0.2", False, False), ("::1", False, False),
    ("localhost", False, False),
])
def test_binding_beyond_loopback_without_tls_warns(host, tls, warns):
    """Any interface but loopback, without a certificate: one warning naming the host."""
    warning = exposure_warning(host, tls)
    assert (warning is not None) == warns
    if warns:
        assert host in warning and "TLS" in warning


def test_a_store_that_does_not_exist_is_one_line_exit_2_and_is_not_created(tmp_path):
    """No database at the tracking URI: exit 2, one line naming the model and the store; nothing written."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = CliRunner().invoke(app, ["serve", "--tracking-uri", store, "-m", "models:/customer-churn@champion"])
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "models:/customer-churn@champion" in res.output and store in res.output
    assert list(tmp_path.iterdir()) == []


def test_half_a_certificate_is_refused(tmp_path):
    """--ssl-certfile without --ssl-keyfile: exit 2 before anything is read."""
    res = CliRunner().invoke(app, ["serve", "--ssl-certfile", str(tmp_path / "cert.pem")])
    assert res.exit_code == 2 and "--ssl-keyfile" in res.output


def test_a_foreign_sqlite_file_is_refused_and_left_alone(tmp_path):
    """An SQLite file without MLflow's tables at the tracking URI: exit 2, one line, and the file
    keeps its one table (MLflow used to create its own tables in it)."""
    import sqlite3
    from contextlib import closing

    db = tmp_path / "other.db"
    with closing(sqlite3.connect(db)) as con:
        con.execute("CREATE TABLE t (x)")
    res = CliRunner().invoke(app, ["serve", "--tracking-uri", f"sqlite:///{db}", "-m", "models:/m@champion"])
    assert res.exit_code == 2, res.output
    assert "an SQLite database without MLflow's tables" in res.output
    with closing(sqlite3.connect(db)) as con:
        assert [r[0] for r in con.execute("SELECT name FROM sqlite_master")] == ["t"]


def test_a_body_cap_that_is_not_a_byte_size_is_named():
    """churn.serve.max-body (DASK_CHURN__SERVE__MAX_BODY) that is no byte size, or below one byte:
    a ConfigError naming the setting (it was a "cannot load" of the model, exit 1)."""
    import dask

    from churn.config import ConfigError
    from churn.jobs.serve import max_body

    assert max_body() == 1 << 20
    for bad in ("abc", "-1", 0):
        with dask.config.set({"churn.serve.max-body": bad}), pytest.raises(ConfigError, match="churn.serve.max-body"):
            max_body()
