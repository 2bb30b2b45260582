"""Job and cluster specs: every mistake is one message naming the key or path, exit code 2."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from churn.config import ConfigError, load_cluster, load_job
from tests.conftest import ROOT

JOB = ROOT / "jobs" / "train.yaml"


def test_default_specs_load():
    """The shipped job and cluster specs validate."""
    job = load_job(JOB)
    assert job.tracking.experiment == "customer-churn"
    assert job.search.cv == 5
    assert job.table.numeric["TotalCharges"].nullable
    cluster = load_cluster(ROOT / "cluster" / "local.yaml")
    assert cluster.host == "127.0.0.1"


def test_set_overrides_parse_yaml_values():
    """--set values are YAML: numbers, lists and mappings arrive typed."""
    job = load_job(JOB, ["search.cv=3", "model.grids={random_forest: {n_estimators: [5, 7]}}", "seed=7"])
    assert job.search.cv == 3
    assert job.model.grids == {"random_forest": {"n_estimators": [5, 7]}}
    assert job.seed == 7


def test_unknown_key_is_named():
    """A misspelt key is reported with its dotted path."""
    with pytest.raises(ConfigError, match=r"search\.folds: unknown key"):
        load_job(JOB, ["search.folds=5"])


def test_wrong_type_is_named():
    """A value of the wrong type is reported with its dotted path."""
    with pytest.raises(ConfigError, match=r"search\.cv: .*integer"):
        load_job(JOB, ["search.cv=five"])


def test_missing_file_is_named(tmp_path):
    """A job spec that does not exist is named."""
    with pytest.raises(ConfigError, match="job spec file not found: .*nope.yaml"):
        load_job(tmp_path / "nope.yaml")


def test_missing_data_file_is_named():
    """A data source that matches nothing is named."""
    job = load_job(JOB, ["data.source=/no/such/dir/*.csv"])
    with pytest.raises(ConfigError, match=r"data.source: no CSV file at '/no/such/dir/\*.csv'"):
        job.data.paths()


def test_unknown_family_and_bad_grid_shape_are_named():
    """A family that does not exist, an empty grid list or a huge grid is refused by the spec itself."""
    with pytest.raises(ConfigError, match="unknown model family 'xgboost'"):
        load_job(JOB, ["model.families=[random_forest, xgboost]"])
    with pytest.raises(ConfigError, match=r"model.grids.random_forest.max_depth must be a non-empty list"):
        load_job(JOB, ["model.grids={random_forest: {max_depth: []}}"])
    with pytest.raises(ConfigError, match=r"numeric_basis: 'splines' is not one of linear, spline"):
        load_job(JOB, ["model.grids={logistic_regression: {numeric_basis: [spline, splines]}}"])
    with pytest.raises(ConfigError, match="has 10,000 grid points; the limit is 5,000"):
        load_job(JOB, ["model.grids={random_forest: {max_depth: " + str(list(range(100))) + ", "
                       "min_samples_leaf: " + str(list(range(1, 101))) + "}}"])


def test_a_glob_matching_a_directory_is_named(tmp_path):
    """A directory whose name looks like a CSV file is refused by name, not read."""
    (tmp_path / "x.csv").mkdir()
    job = load_job(JOB, [f"data.source={tmp_path}/*.csv"])
    with pytest.raises(ConfigError, match=r"data.source: .*x.csv is a directory, not a CSV file"):
        job.data.paths()


def test_column_in_two_groups_is_refused():
    """A column cannot be both numeric and categorical."""
    with pytest.raises(ConfigError, match="tenure.*both numeric and categorical"):
        load_job(JOB, ["schema.categorical.tenure=[a, b]"])


@pytest.mark.cluster
@pytest.mark.parametrize("args, message", [
    (["--set", "search.folds=5"], "search.folds: unknown key"),
    (["--set", "split.test=2"], "split.test: Input should be less than 1"),
    (["--set", "data.source=/nowhere.csv"], "data.source: no CSV file at '/nowhere.csv'"),
    (["--cluster", "/nowhere/cluster.yaml"], "cluster spec file not found: /nowhere/cluster.yaml"),
])
def test_cli_config_errors_exit_2_before_any_cluster(args, message):
    """The CLI prints one message and exits 2 quickly: no cluster is started."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "churn.cli", "train", str(JOB), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Dask client ready" not in proc.stderr
    assert time.perf_counter() - t0 < 60


@pytest.mark.cluster
def test_cli_help_on_every_command():
    """--help works on the app and on each command."""
    for args in ([], ["train"]):
        proc = subprocess.run([sys.executable, "-m", "churn.cli", *args, "--help"], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0
        assert "Usage" in proc.stdout
