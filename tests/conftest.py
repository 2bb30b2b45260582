"""Shared fixtures: a real LocalCluster, real MLflow stores and small seeded data files.

Tests that start or use a Dask cluster, a server process or the ``churn`` command in a
subprocess are marked ``cluster`` (automatically, by the fixtures they use or by hand);
``pytest -m "not cluster"`` runs the fast, pure tests alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from churn.clusters import cluster_client
from churn.config import JobSpec, LocalClusterSpec, apply_overrides

ROOT = Path(__file__).resolve().parents[1]
TELCO = ROOT / "data" / "telco" / "Telco-Customer-Churn.csv"
MLC = ROOT / "data" / "mlc" / "mlc_churn.csv"

CLUSTER_FIXTURES = {"client", "scheduler_address", "mlflow_server", "forked_churn"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CLUSTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def client():
    """A LocalCluster of 2 worker processes x 1 thread on 127.0.0.1, shared by the suite."""
    spec = LocalClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="3GiB", dashboard_address=None)
    with cluster_client(spec) as c:
        yield c


@pytest.fixture(scope="session")
def forked_churn():
    """`churn` commands in processes forked from one that imported churn once (:mod:`tests.forkcli`)."""
    from tests.forkcli import ForkedChurn
    server = ForkedChurn()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def telco_subset(tmp_path_factory) -> Path:
    """The first 1,500 Telco rows plus every row with a blank TotalCharges, as a CSV file."""
    lines = TELCO.read_text().splitlines(keepends=True)
    rows = lines[1:1501] + [ln for ln in lines[1501:] if ", ," in ln]
    path = tmp_path_factory.mktemp("telco") / "telco-subset.csv"
    path.write_text(lines[0] + "".join(rows))
    return path


def job_spec(tmp_path: Path, source: Path | str, *overrides: str, base: Path = ROOT / "jobs" / "train.yaml") -> JobSpec:
    """The job in ``base`` pointed at ``source``, with outputs and MLflow store under ``tmp_path``."""
    data = yaml.safe_load(base.read_text())
    data = apply_overrides(data, [
        f"data.source={source}",
        f"data.output={tmp_path / 'datasets'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        *overrides,
    ])
    return JobSpec.model_validate(data)


@pytest.fixture(scope="session")
def finished_train(client, telco_subset, tmp_path_factory):
    """A finished train run (two families, 2-fold CV, 2 repeats) on the Telco subset plus two rows
    ingest quarantines, with the built-in campaign economics (not set in the job): (job, result)."""
    from churn.jobs.train import run

    tmp = tmp_path_factory.mktemp("finished-train")
    lines = telco_subset.read_text().splitlines(keepends=True)
    bad = [lines[1].replace("Female", "Robot", 1).replace(lines[1].split(",")[0], "BAD-1", 1),
           lines[2].replace("Male", "Robot", 1).replace(lines[2].split(",")[0], "BAD-2", 1)]
    source = tmp / "telco-dirty.csv"
    source.write_text("".join(lines).rstrip("\n") + "\n" + "".join(bad))
    data = yaml.safe_load((ROOT / "jobs" / "train.yaml").read_text())
    del data["evaluation"]["economics"]
    base = tmp / "train.yaml"
    base.write_text(yaml.safe_dump(data))
    job = job_spec(tmp, source, "model.families=[logistic_regression, decision_tree]", "search.cv=2",
                   "model.imbalance=[none, class_weight]", "evaluation.plots=false", base=base)
    return job, run(job, client)
