"""What a spec tells the tracking store: its names are checked before any cluster starts (with
MLflow's own rules, against a real SQLite store), and the run records the effective spec."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import yaml

from churn.config import ConfigError, load_job
from churn.jobs import train as train_job
from churn.tracking.run_log import parent_run
from tests.conftest import ROOT, TELCO, job_spec


@pytest.mark.parametrize("override, message", [
    ("tracking.alias=v1", r"tracking.alias: MLflow refuses 'v1': Version alias name 'v1' is reserved"),
    ("tracking.alias=V12", r"tracking.alias: MLflow refuses 'V12'"),
    ("tracking.alias=latest", r"tracking.alias: MLflow refuses 'latest'"),
    ("tracking.alias=new/champion", r"tracking.alias: MLflow refuses 'new/champion'"),
    ("tracking.registered_model=''", r"tracking.registered_model: MLflow refuses ''"),
    ("tracking.registered_model=' '", r"tracking.registered_model: MLflow refuses ' '"),
    ("tracking.registered_model=team:churn", r"tracking.registered_model: MLflow refuses 'team:churn'"),
    ("tracking.experiment=''", r"tracking.experiment: MLflow refuses ''"),
])
def test_registry_names_mlflow_refuses_fail_the_preflight(tmp_path, override, message):
    """Today an alias v1 fails after the whole job (leaving a registered version behind) and an
    empty model name after the cluster is up: the preflight refuses them first."""
    job = job_spec(tmp_path, TELCO, "model.families=[logistic_regression]", override)
    with pytest.raises(ConfigError, match=message) as err:
        train_job.preflight(job)
    assert len(str(err.value).splitlines()) == 1


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the tests below (creating one costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


def test_a_deleted_experiment_fails_the_preflight(tmp_path, store):
    """MLflow cannot start a run in a deleted experiment: the preflight says how to restore it."""
    job = job_spec(tmp_path, TELCO, "model.families=[logistic_regression]", "tracking.experiment=gone")
    assert train_job.preflight(job) == job.tracking.uri
    assert not (tmp_path / "mlflow.db").exists(), "the preflight created the store"
    job.tracking.uri = store
    client = mlflow.MlflowClient(store)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(ConfigError, match=r"tracking.experiment: experiment 'gone' is deleted in sqlite:///.*; "
                                          r"restore it \(mlflow experiments restore --experiment-id \d+\)"):
        train_job.preflight(job)


def test_the_run_records_the_effective_spec_beside_the_job_file(tmp_path, store):
    """A job file itself named job.yaml no longer replaces the effective spec: the --set values stay
    in the run's record (job/job.yaml), the file as written sits in job/file/."""
    text = (ROOT / "jobs" / "train.yaml").read_text()
    path = tmp_path / "job.yaml"
    path.write_text(text)
    uri = store
    job = load_job(path, [f"data.source={TELCO}", "search.cv=3", f"tracking.uri={uri}"])
    with parent_run(uri, job, str(path)) as run:
        run_id = run.info.run_id
    logged = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="job", tracking_uri=uri,
                                                      dst_path=str(tmp_path / "logged")))
    assert yaml.safe_load((logged / "job.yaml").read_text())["search"]["cv"] == 3
    assert (logged / "file" / "job.yaml").read_text() == text


def test_a_tracking_file_that_is_not_sqlite_is_one_line(tmp_path):
    """The experiment check reads the store: a file that is not a database is named, not a
    SQLAlchemy traceback."""
    from churn.tracking.store import TrackingError

    (tmp_path / "mlflow.db").write_text("not a database\n")
    job = job_spec(tmp_path, TELCO, "model.families=[logistic_regression]")
    with pytest.raises(TrackingError, match=r"tracking store sqlite:///.*mlflow.db: cannot read experiment "
                                            r"'customer-churn': file is not a database$"):
        train_job.preflight(job)


def test_a_token_in_mlflow_tracking_uri_is_refused(monkeypatch):
    """The environment's tracking URI follows the spec's rule: a ?token= is a credential too."""
    from churn.config import TrackingSpec
    from churn.tracking.store import resolve_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://mlflow.example.com/?Token=hunter2-s3cr3t")
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI holds credentials") as err:
        resolve_uri(TrackingSpec())
    assert "hunter2" not in str(err.value)
