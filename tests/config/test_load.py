"""Job and cluster specs: every mistake is one message naming the key or path, exit code 2."""

from __future__ import annotations

import re
import time

import pytest
import yaml

from churn.config import ConfigError, load_cluster, load_job
from churn.config.paths import absolute
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
    with pytest.raises(ConfigError, match="unknown model family 'lgbm'"):
        load_job(JOB, ["model.families=[random_forest, lgbm]"])
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
def test_cli_config_errors_exit_2_before_any_cluster(forked_churn, args, message):
    """The CLI prints one message and exits 2 quickly: no cluster is started."""
    t0 = time.perf_counter()
    proc = forked_churn.run("train", str(JOB), *args, cwd=ROOT, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Dask client ready" not in proc.stderr
    assert time.perf_counter() - t0 < 60


@pytest.mark.cluster
def test_cli_help_on_every_command(forked_churn):
    """--help works on the app and on each command."""
    for args in ([], ["train"]):
        proc = forked_churn.run(*args, "--help", timeout=60)
        assert proc.returncode == 0
        assert "Usage" in proc.stdout


# --------------------------------------------------------------------------- issue 22: refused at load
@pytest.mark.parametrize("name, override", [
    ("_label", "schema.ignore=[_label]"), ("_key", "schema.id=_key"), ("_split", "schema.categorical._split=[a, b]"),
    ("_label", "schema.numeric._label={min: 0}"), ("_label", "schema.label=_label")])
def test_a_column_named_like_churns_own_is_refused(name, override):
    """A source column named _label, _key or _split would be replaced by (or clash with) the
    column churn adds: refused at load, naming the column and the reserved set."""
    with pytest.raises(ConfigError, match=rf"schema: column '{name}' has a name churn gives its own columns "
                                          r"\(_key, _label, .*_split.*\): rename it") as err:
        load_job(JOB, [override])
    assert len(str(err.value).splitlines()) == 1


def test_every_column_churn_adds_is_reserved():
    """The reserved set covers every column name churn's data code writes (its string literals
    such as "_raw" or "_u"), so a column added there cannot silently meet a source column."""
    import ast

    from churn.config.job import RESERVED_COLUMNS
    from churn.data import columns

    files = [*(ROOT / "churn" / "data").glob("*.py"), ROOT / "churn" / "modeling" / "batch.py",
             ROOT / "churn" / "monitoring" / "batch.py"]
    written = {node.value for path in files for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and re.fullmatch(r"_[a-z][a-z_]*", node.value)}
    written |= {v for k, v in vars(columns).items() if k.isupper() and isinstance(v, str)}
    written |= {v for v in columns.QUARANTINE_META}
    assert {"_key", "_label", "_split", "_raw", "_u"} <= written  # the scan sees them
    assert written <= RESERVED_COLUMNS, written - RESERVED_COLUMNS


SECRET = "hunter2-s3cr3t"


@pytest.mark.parametrize("override", [
    f"data.source=s3://AKIAEXAMPLE:{SECRET}@bucket/churn/*.csv",
    f"data.source=https://example.com/churn.csv?X-Amz-Credential=AKIA&X-Amz-Signature={SECRET}",
    f"data.source=https://acct.blob.core.windows.net/c/churn.csv?sv=2024&SIG={SECRET}",
    f"data.source=simplecache::https://example.com/churn.csv?access_token={SECRET}",
    f"tracking.uri=https://mlflow.example.com/?token={SECRET}",
    f"tracking.uri=https://mlflow.example.com/?Password={SECRET}",
])
def test_credentials_in_any_url_of_a_spec_are_refused(override):
    """A password before the host or a credential-looking query parameter, in the data source as
    in the tracking URI: one line naming the key, without the secret."""
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: .* holds a credential \((a password|the query parameter)") as err:
        load_job(JOB, [override])
    assert SECRET not in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_credentials_in_a_model_uri_are_refused():
    """Score and monitor specs load their model from a URI: the same rule."""
    from churn.config import load_monitor_job, load_score_job

    for load, spec in ((load_score_job, "score.yaml"), (load_monitor_job, "monitor.yaml")):
        with pytest.raises(ConfigError, match=r"model_uri: the model URI holds a credential") as err:
            load(ROOT / "jobs" / spec, [f"model_uri=https://user:{SECRET}@models.example.com/churn"])
        assert SECRET not in str(err.value)


@pytest.mark.parametrize("source", ["abfs://churn@account.dfs.core.windows.net/data/*.csv",
                                    "https://example.com/churn.csv?version=3&author=x&monkey=1&signed=yes",
                                    "data/x?token=1.csv"])
def test_what_names_no_secret_is_kept(source):
    """Azure's container@account (or sftp's user@host), query parameters that only contain a
    credential word, and a local glob's ? are no secrets: the source is kept (a local one made absolute)."""
    assert load_job(JOB, [f"data.source={source}"]).data.source == absolute(source)


def test_a_score_id_named_like_a_score_column_is_refused(tmp_path):
    """The scores hold the id beside probability, decision, ...: an id of the same name would be lost.
    The shipped score job, which gives no schema (the model's table), loads."""

    from churn.config import load_score_job

    assert load_score_job(ROOT / "jobs" / "score.yaml", ["data.source=x.csv"]).table is None
    job = tmp_path / "score.yaml"
    schema = yaml.safe_load(JOB.read_text())["schema"]
    job.write_text(yaml.safe_dump({**yaml.safe_load((ROOT / "jobs" / "score.yaml").read_text()), "schema": schema}))
    with pytest.raises(ConfigError, match="schema.id 'probability' is a column churn writes in the scores"):
        load_score_job(job, ["schema.id=probability"])


@pytest.mark.parametrize("override, message", [
    ("evaluation.top_k=[0]", r"evaluation.top_k: 0.0 is not a fraction of the rows between 0.01 and 1"),
    ("evaluation.top_k=[0.1, -0.05]", r"evaluation.top_k: -0.05 is not a fraction"),
    ("evaluation.top_k=[1.5]", r"evaluation.top_k: 1.5 is not a fraction"),
    ("evaluation.top_k=[0.005]", r"evaluation.top_k: 0.005 is not a fraction"),
    ("evaluation.top_k=[0.05, 0.051]", r"evaluation.top_k: 0.05 and 0.051 are both the top 5 %"),
    ("evaluation.top_k=[.nan]", r"evaluation.top_k.0: Input should be a finite number"),
    ("evaluation.economics.customer_value=.inf", r"evaluation.economics.customer_value: .*finite number"),
    ("data.blocksize=abc", r"data.blocksize: blocksize 'abc' is not a byte size such as 32MiB"),
    ("data.blocksize=0", r"data.blocksize: blocksize 0 must be at least one byte"),
])
def test_values_the_job_cannot_use_are_refused(override, message):
    """Precision at the top 0 % (logged as 0.0 today), a negative or > 1 fraction, two values
    logged under one metric name, a non-finite number, a block size that is not one."""
    with pytest.raises(ConfigError, match=message):
        load_job(JOB, [override])


def test_a_bad_blocksize_setting_is_refused_at_load():
    """The setting the spec falls back on (DASK_CHURN__INGEST__BLOCKSIZE lands in dask's config)."""
    import dask.config

    with dask.config.set({"churn.ingest.blocksize": "abc"}), pytest.raises(
            ConfigError, match=r"data: blocksize 'abc' \(the churn.ingest.blocksize setting, .*"
                               r"DASK_CHURN__INGEST__BLOCKSIZE.*\) is not a byte size"):
        load_job(JOB)
    assert load_job(JOB, ["data.blocksize=8MiB"]).data.blocksize == "8MiB"


def test_a_bad_id_limit_setting_is_refused_at_load():
    """churn.ingest.max-id-bytes is read in each block task on the workers: one that is not a whole
    number of bytes is a spec error at load, not a worker's ValueError after the cluster started."""
    import dask.config

    for bad in ("abc", 0, 1.5, True):
        with dask.config.set({"churn.ingest.max-id-bytes": bad}), pytest.raises(
                ConfigError, match=r"data: the churn.ingest.max-id-bytes setting .* not a whole number of bytes"):
            load_job(JOB)
    with dask.config.set({"churn.ingest.max-id-bytes": "64"}):
        assert load_job(JOB).data.source


@pytest.mark.parametrize("what", ["job", "cluster"])
def test_a_spec_file_that_is_not_utf8_is_named(tmp_path, what):
    """A Latin-1 file: one line naming the file and the first bad byte, not a UnicodeDecodeError."""
    src = (ROOT / "jobs" / "train.yaml") if what == "job" else (ROOT / "cluster" / "local.yaml")
    path = tmp_path / f"{what}.yaml"
    path.write_bytes(src.read_bytes() + "# Café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{what} spec file .*{what}.yaml is not UTF-8 text \(byte 0xe9 at offset"):
        (load_job if what == "job" else load_cluster)(path)


def test_nested_yaml_aliases_are_refused_with_a_short_message(tmp_path):
    """A 'billion laughs' in a grid value (9^7 values from a few lines): refused at once, in one
    short line, not expanded into a message of many megabytes."""
    items = ["&a [x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        items.append(f"&{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = tmp_path / "laughs.yaml"
    path.write_text(JOB.read_text().replace("numeric_basis: [linear, spline]", f"numeric_basis: [{', '.join(items)}]"))
    assert path.stat().st_size < 6000
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"laughs.yaml: more than 100,000 values once its YAML aliases are written "
                                          r"out") as err:
        load_job(path)
    assert len(str(err.value)) < 300 and time.perf_counter() - t0 < 5


def test_a_message_repeats_at_most_a_few_hundred_characters_of_a_value():
    """Below the alias limit a value can still be long: the message shows its start and its length."""
    with pytest.raises(ConfigError) as err:
        load_job(JOB, ["model.grids={logistic_regression: {numeric_basis: [" + "x" * 1_000_000 + "]}}"])
    assert len(str(err.value)) < 600  # before the pattern: on a long text it would backtrack for minutes
    assert re.search(r"numeric_basis: 'x{200}'… \(1,000,000 characters\) is not one of linear, spline", str(err.value))


@pytest.mark.timeout(60)
def test_a_named_pipe_as_data_source_is_refused_without_reading_it(tmp_path):
    """Opening a FIFO blocks until a writer comes: refused by its file type instead."""
    import os

    fifo = tmp_path / "churn.csv"
    os.mkfifo(fifo)
    job = load_job(JOB, [f"data.source={tmp_path}/*.csv"])
    with pytest.raises(ConfigError, match=r"data.source: .*churn.csv is not a regular file \(a named pipe"):
        job.data.paths()
    fifo.unlink()
    fifo.symlink_to(tmp_path / "gone.csv")  # a glob also matches a broken link
    with pytest.raises(ConfigError, match=r"data.source: .*churn.csv is not a regular file"):
        job.data.paths()


def test_local_paths_are_made_absolute_on_loading(tmp_path, monkeypatch):
    """A relative source, output, report or SQLite store means this folder, whatever folder a worker
    runs in; URLs are left as they are."""
    from churn.config import load_monitor_job, load_score_job

    monkeypatch.chdir(tmp_path)
    job = load_job(JOB, ["data.source=in/*.csv", "data.output=out", "tracking.uri=sqlite:///m.db"])
    assert (job.data.source, job.data.output) == (f"{tmp_path}/in/*.csv", f"{tmp_path}/out")
    assert job.tracking.uri == f"sqlite:///{tmp_path}/m.db"
    score = load_score_job(ROOT / "jobs" / "score.yaml", ["data.source=s3://bucket/x.csv", "data.output=scores"])
    assert (score.data.source, score.data.output) == ("s3://bucket/x.csv", f"{tmp_path}/scores")
    monitor = load_monitor_job(ROOT / "jobs" / "monitor.yaml", ["data.source=file://batch.csv", "report=r"])
    assert (monitor.data.source, monitor.report) == (f"file://{tmp_path}/batch.csv", f"{tmp_path}/r")
