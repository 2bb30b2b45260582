"""An `mlflow server` with basic auth: credentials only from the environment, never in a spec or a log."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from churn.config import ConfigError, TrackingSpec, load_job
from churn.tracking.store import TrackingError, check_reachable, resolve_uri
from tests.conftest import ROOT
from tests.servers import http_process

pytestmark = pytest.mark.cluster  # a server process, and the churn command in a process of its own
MLFLOW = str(Path(sys.executable).parent / "mlflow")
PASSWORD = "Tr0ub4dor-and-3"  # the admin's; created by the server at first start


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` with its own user store, stopped afterwards."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    ini = root / "auth.ini"
    ini.write_text("[mlflow]\ndefault_permission = READ\n"
                   f"database_uri = sqlite:///{root / 'users.db'}\nadmin_username = admin\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": PASSWORD,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-key"}
    with http_process([MLFLOW, "server", "--app-name", "basic-auth", "--host", "127.0.0.1", "--port", "{port}",
                       "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                       "--artifacts-destination", str(root / "artifacts"), "--workers", "1"], "/health",
                      env=env) as url:
        yield url


def _without_credentials() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}


def test_unauthenticated_requests_are_refused(auth_server, monkeypatch):
    """The REST API answers 401 without credentials, and the preflight names the refusal, never the password."""
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(auth_server + "/api/2.0/mlflow/experiments/search?max_results=1", timeout=10)
    assert err.value.code == 401
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(TrackingError, match="refused no credentials .*MLFLOW_TRACKING_USERNAME.*HTTP 401"):
        check_reachable(auth_server, timeout=10)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-" + PASSWORD)
    with pytest.raises(TrackingError, match="refused user 'admin': HTTP 401") as refused:
        check_reachable(auth_server, timeout=10)
    assert PASSWORD not in str(refused.value)


def test_credentials_in_a_spec_are_refused(forked_churn, monkeypatch):
    """A tracking URI with user:password in it, in a spec or in MLFLOW_TRACKING_URI, is an error that
    does not repeat the password."""
    with pytest.raises(ConfigError, match="tracking.uri: .*MLFLOW_TRACKING_PASSWORD") as err:
        load_job(ROOT / "jobs" / "train.yaml", [f"tracking.uri=http://admin:{PASSWORD}@127.0.0.1:5000"])
    assert PASSWORD not in str(err.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://admin:{PASSWORD}@127.0.0.1:5000")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI holds credentials") as err:
        resolve_uri(TrackingSpec())
    assert PASSWORD not in str(err.value)
    status = forked_churn.run("status", "0" * 32, cwd=ROOT, timeout=120,
                              env=dict(os.environ))  # the same error from the CLI: one line, exit 2
    assert status.returncode == 2 and "MLFLOW_TRACKING_URI holds credentials" in status.stderr, status.stderr
    assert "Traceback" not in status.stderr and PASSWORD not in status.stdout + status.stderr


def test_train_with_credentials_from_the_environment(auth_server, forked_churn, client, tmp_path, telco_subset):
    """`churn train` with the credentials in its environment registers a model; the password is in no
    output line and no logged parameter or tag."""
    env = {**_without_credentials(), "MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": PASSWORD}
    # the command in a process forked from one that imported churn (tests.forkcli), on the suite's cluster
    args = ["train", str(ROOT / "jobs" / "train.yaml"), "--verbose", "--scheduler", client.scheduler.address,
            "--set", f"data.source={telco_subset}", "--set", f"data.output={tmp_path / 'ds'}",
            "--set", f"tracking.uri={auth_server}", "--set", "search.cv=2",
            "--set", "model.families=[logistic_regression]", "--set", "evaluation.plots=false",
            # one candidate, one treatment, one repeat: the test is about credentials, not the search
            "--set", "model.grids={logistic_regression: {C: [1.0]}}", "--set", "search.repeats=1",
            "--set", "model.imbalance=[none]", "--set", "model.feature_sums=false"]
    proc = forked_churn.run(*args, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert PASSWORD not in proc.stdout + proc.stderr
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=PASSWORD)
    try:
        client = mlflow.MlflowClient(auth_server)
        version = client.get_model_version_by_alias("customer-churn", "champion")
        run = client.get_run(version.run_id)
        logged = [*run.data.params.values(), *run.data.tags.values()]
        assert logged and not any(PASSWORD in str(v) for v in logged)
    finally:
        for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            os.environ.pop(var, None)
