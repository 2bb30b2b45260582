"""churn monitor end to end: a registered model's training profile against new CSV batches; and one
rule set: ingest, score, monitor and the served model give the same rows the same verdict."""

from __future__ import annotations

import json
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.exceptions import MlflowException

from churn.config import ConfigError, load_monitor_job, load_score_job
from churn.data.ingest import ingest
from churn.data.manifest import IngestError
from churn.jobs import monitor as monitor_job
from churn.jobs import score as score_job
from churn.jobs.monitor import run as monitor
from churn.jobs.train import run as train
from tests.conftest import ROOT, job_spec

TELCO = ROOT / "data" / "telco" / "Telco-Customer-Churn.csv"


@pytest.fixture(scope="module")
def trained(client, tmp_path_factory, telco_subset):
    """A quick model on the Telco subset, registered with its training profile."""
    tmp = tmp_path_factory.mktemp("monitor")
    job = job_spec(tmp, telco_subset, "search.cv=3", "evaluation.plots=false",
                   "model.families=[logistic_regression]", "model.grids={logistic_regression: {C: [1.0]}}")
    train(job, client)
    return tmp, job.tracking.uri


def _batches(tmp) -> tuple:
    """The Telco rows after the subset (labelled, same distribution), and the same rows drifted:
    monthly charges up 40 %, 40 % of the customers on a contract the model never saw ("Ten year",
    quarantined by its rules), most others moved to two-year contracts; and the new-level count."""
    rows = pd.read_csv(TELCO, dtype=str, keep_default_na=False).iloc[1500:]
    calm = tmp / "calm.csv"
    rows.to_csv(calm, index=False)
    drifted = rows.copy()
    drifted["MonthlyCharges"] = (drifted["MonthlyCharges"].astype(float) * 1.4).round(2).astype(str)
    draw = np.random.default_rng(0).random(len(drifted))
    drifted.loc[draw < 0.4, "Contract"] = "Ten year"
    drifted.loc[(draw >= 0.4) & (draw < 0.8), "Contract"] = "Two year"
    shifted = tmp / "drifted.csv"
    drifted.to_csv(shifted, index=False)
    return calm, shifted, int((draw < 0.4).sum())


def _spec(tmp, uri, source, *sets: str):
    return load_monitor_job(ROOT / "jobs" / "monitor.yaml", [f"data.source={source}", f"tracking.uri={uri}",
                                                              f"report={tmp / 'reports'}", *sets])


def test_monitor_finds_exactly_the_drifted_features(client, trained):
    """Undrifted batch: no alert; drifted batch: exactly MonthlyCharges and Contract, and the run
    and report name them; a labelled batch gets performance against the out-of-fold figures."""
    tmp, uri = trained
    calm, shifted, new_level = _batches(tmp)
    quiet = monitor(_spec(tmp, uri, calm), client)
    assert quiet.drift.drifted == [] and not any(a.startswith(("feature", "quarantine")) for a in quiet.drift.alerts)
    assert quiet.drift.quarantined == {}
    assert quiet.batch.rows_read == quiet.batch.rows_profiled + quiet.batch.rows_quarantined == 7043 - 1500
    perf = quiet.drift.performance
    assert abs(perf["roc_auc"]["batch"] - perf["roc_auc"]["reference"]) < 0.05
    assert 0 < perf["brier"]["batch"] < 0.25

    loud = monitor(_spec(tmp, uri, shifted), client)
    assert sorted(loud.drift.drifted) == ["Contract", "MonthlyCharges"]
    # the unseen level never reaches the profile (its PSI bin stays empty): the quarantine carries it
    assert loud.drift.quarantined == {"unknown_category:Contract": new_level} and 2000 < new_level < 2450
    assert (f"quarantine: unknown_category:Contract in {new_level:,} of 5,543 rows read "
            f"({new_level / 5543:.1%}) >= 1.0%") in loud.drift.alerts
    html = loud.report.read_text()
    assert html.startswith("<!doctype html>") and "MonthlyCharges" in html and "data:image/png;base64," in html
    assert f"<tr class='flag'><td>unknown_category</td><td>Contract</td><td>{new_level:,}</td>" in html
    saved = json.loads((loud.report.parent / "drift.json").read_text())
    assert {f["feature"] for f in saved["features"] if f["flagged"]} == {"Contract", "MonthlyCharges"}
    assert saved["quarantined"] == {"unknown_category:Contract": new_level}
    mlflow.set_tracking_uri(uri)
    run = mlflow.get_run(loud.run_id)
    assert sorted(run.data.tags["drifted_features"].split(",")) == ["Contract", "MonthlyCharges"]
    assert run.data.metrics["psi_Contract"] >= 0.2
    assert run.data.metrics["quarantined_unknown_category_Contract"] == new_level
    version = mlflow.MlflowClient().get_model_version("customer-churn", run.data.tags["model_version"])
    assert version.tags["last_monitor_run"] == loud.run_id


def test_monitor_exit_code_follows_the_thresholds(forked_churn, client, trained):
    """The command exits 3 on the drifted batch (40 % of its rows on an unseen Contract level used to
    exit 0 without a word), 0 when the thresholds are switched off."""
    tmp, uri = trained
    _, shifted, _ = _batches(tmp)
    base = ["monitor", str(ROOT / "jobs" / "monitor.yaml"),
            "--scheduler", client.scheduler.address, "--set", f"data.source={shifted}", "--set",
            f"tracking.uri={uri}", "--set", f"report={tmp / 'cli-reports'}"]
    alert = forked_churn.run(*base, timeout=300, cwd=ROOT)
    assert alert.returncode == 3, alert.stderr
    assert "Contract" in alert.stdout and "MonthlyCharges" in alert.stdout
    assert "unknown_category:Contract" in alert.stdout  # 40 % of the rows on an unseen level
    off = [arg for name in ("psi", "prediction_psi", "roc_auc_drop", "brier_rise", "quarantined", "calibration_gap")
           for arg in ("--set", f"thresholds.{name}=null")]
    quiet = forked_churn.run(*base, *off, timeout=300, cwd=ROOT)
    assert quiet.returncode == 0, quiet.stderr


def test_a_model_that_is_not_there_is_named(forked_churn, client, trained):
    """An alias that points nowhere: exit 2, one line naming the URI, no traceback."""
    tmp, uri = trained
    proc = forked_churn.run("monitor", str(ROOT / "jobs" / "monitor.yaml"),
                            "--scheduler", client.scheduler.address, "--set", f"tracking.uri={uri}",
                            "--set", "model_uri=models:/customer-churn@nowhere", "--set", f"report={tmp / 'r'}",
                            timeout=300, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert "model_uri: cannot load models:/customer-churn@nowhere" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr


# One set of rows for every path: each bad row breaks one rule in one column, so monitor's counts
# by reason and column name each row's verdict too. Values as the CSV holds them.
DIFFERENTIAL = {
    "good": ({}, set()),
    "good-blank-total": ({"TotalCharges": ""}, set()),  # TotalCharges is nullable
    "negative-tenure": ({"tenure": "-3"}, {"out_of_range:tenure"}),
    "unseen-contract": ({"Contract": "Ten year"}, {"unknown_category:Contract"}),
    "fractional-tenure": ({"tenure": "1.5"}, {"not_an_integer:tenure"}),
    "blank-monthly": ({"MonthlyCharges": ""}, {"blank_value:MonthlyCharges"}),
    "text-monthly": ({"MonthlyCharges": "abc"}, {"not_a_number:MonthlyCharges"}),
    "senior-2": ({"SeniorCitizen": "2"}, {"out_of_range:SeniorCitizen"}),
    "blank-gender": ({"gender": ""}, {"blank_value:gender"}),
    "inf-monthly": ({"MonthlyCharges": "inf"}, {"not_finite:MonthlyCharges"}),
    "nan-total": ({"TotalCharges": "NaN"}, {"not_finite:TotalCharges"}),  # nullable, but NaN text is not a blank
}


def _differential_csv(path):
    base = pd.read_csv(TELCO, dtype=str, keep_default_na=False).iloc[[2000]]
    rows = []
    for name, (change, _) in DIFFERENTIAL.items():
        row = base.copy()
        row["customerID"] = name
        for col, value in change.items():
            row[col] = value
        rows.append(row)
    pd.concat(rows).to_csv(path, index=False)
    return path


def _verdicts(clean_ids, quarantine: pd.DataFrame) -> dict[str, set[str]]:
    out = {i: set() for i in clean_ids}
    out.update({i: set(r.split(";")) for i, r in zip(quarantine["customerID"], quarantine["_reasons"], strict=True)})
    return out


def _as_json(value: str):
    """A CSV cell as a JSON client sends it: finite numbers as numbers, blanks as null, the rest
    (``inf`` and ``NaN`` too: JSON has no such numbers) as text."""
    if not value.strip():
        return None
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        return number if np.isfinite(number) else value
    return value


def test_one_rule_set_ingest_score_monitor_and_serve_agree(client, trained, tmp_path):
    """The same rows get the same verdict from ingest, score, monitor and the served model: the
    score and monitor jobs repeat no schema and check rows with the rules logged with the model."""
    tmp, uri = trained
    src = _differential_csv(tmp_path / "rows.csv")
    expected = {name: reasons for name, (_, reasons) in DIFFERENTIAL.items()}

    ds = ingest(job_spec(tmp_path, src, "data.max_bad_fraction=1"), client)
    ingested = _verdicts(pd.read_parquet(ds.data_path)["customerID"], pd.read_parquet(ds.quarantine_path))
    assert ingested == expected

    spec = load_score_job(ROOT / "jobs" / "score.yaml", [f"data.source={src}", f"data.output={tmp_path / 'scores'}",
                                                         f"tracking.uri={uri}", "data.max_bad_fraction=1"])
    assert spec.table is None
    score_job.preflight(spec)
    res = score_job.run(spec, client)
    assert _verdicts(pd.read_parquet(res.root / "data")["customerID"],
                     pd.read_parquet(res.root / "quarantine")) == expected

    watched = monitor(_spec(tmp_path, uri, src, "data.max_bad_fraction=1"), client)
    bad = {r for reasons in expected.values() for r in reasons}
    assert watched.drift.quarantined == dict.fromkeys(bad, 1)
    assert watched.batch.rows_profiled == sum(not r for r in expected.values())
    assert watched.drift.note == "2 rows: too few to compare, need 100" and watched.drift.features == []
    assert {a.split()[1] for a in watched.drift.alerts} == bad  # "quarantine: <reason:column> in 1 of 11 ..."

    mlflow.set_tracking_uri(uri)
    path = list(sys.path)
    try:  # the served model's own predict (what MLflow's scoring server calls), one request per row
        served_model = mlflow.pyfunc.load_model("models:/customer-churn@champion").unwrap_python_model()
    finally:
        sys.path[:] = path  # MLflow put the model's code copy first
    frame = pd.read_csv(src, dtype=str, keep_default_na=False).drop(columns=["customerID", "Churn"])
    served = {}
    for name, (_, row) in zip(DIFFERENTIAL, frame.iterrows(), strict=True):
        request = pd.DataFrame([{c: _as_json(v) for c, v in row.items()}])
        try:
            answer = served_model.predict(None, request)
            assert 0 <= answer["probability"].iloc[0] <= 1
            served[name] = set()
        except MlflowException as exc:  # the 400's body: each problem's row, column, value and rule
            served[name] = {f"{p['rule']}:{p['column']}" for p in exc.json_kwargs["problems"]}
    # the same rows refused for the same column and the same reason code as ingest's
    assert served == expected


def test_bad_row_budget_and_tiny_batches(client, trained, tmp_path):
    """data.max_bad_fraction fails score (nothing published) and monitor (no report) with the counts;
    a header-only batch is "no rows to compare", with no alert."""
    tmp, uri = trained
    src = _differential_csv(tmp_path / "rows.csv")
    spec = load_score_job(ROOT / "jobs" / "score.yaml", [f"data.source={src}", f"data.output={tmp_path / 'scores'}",
                                                         f"tracking.uri={uri}"])
    with pytest.raises(IngestError, match=r"^score: bad-row budget exceeded: 9 of 11 rows \(81.82%\) failed "
                                          r"validation, budget is 5.00% \(data.max_bad_fraction\); by reason: "):
        score_job.run(spec, client)
    assert not [p for p in (tmp_path / "scores").iterdir() if p.name.startswith("scores-")]
    with pytest.raises(IngestError, match=r"^monitor: bad-row budget exceeded: 9 of 11 rows .* budget is 50.00%"):
        monitor(_spec(tmp_path, uri, src), client)
    assert not (tmp_path / "reports").exists()

    header = tmp_path / "header.csv"
    header.write_text(src.read_text().splitlines()[0] + "\n")
    empty = monitor(_spec(tmp_path, uri, header), client)
    assert (empty.drift.note, empty.drift.alerts, empty.drift.features) == ("no rows to compare", [], [])
    assert json.loads((empty.report.parent / "drift.json").read_text())["note"] == "no rows to compare"


def test_a_job_schema_that_differs_from_the_models_is_refused(trained, tmp_path):
    """A score or monitor job may repeat the table; with other rules it is refused in the preflight
    (before any cluster), naming the column and the rule."""
    tmp, uri = trained
    schema = yaml.safe_load((ROOT / "jobs" / "train.yaml").read_text())["schema"]
    loose = {**schema, "numeric": {**schema["numeric"], "tenure": {"integer": True, "min": -10}}}
    jobs = [("score", load_score_job, score_job.preflight, f"data.output={tmp_path / 'out'}"),
            ("monitor", load_monitor_job, monitor_job.preflight, f"report={tmp_path / 'r'}")]
    for kind, load, preflight, out in jobs:
        data = yaml.safe_load((ROOT / "jobs" / f"{kind}.yaml").read_text())
        job = tmp_path / f"{kind}.yaml"
        sets = [f"data.source={TELCO}", f"tracking.uri={uri}", out]
        job.write_text(yaml.safe_dump({**data, "schema": schema}))
        preflight(load(job, sets))  # the model's own rules: accepted
        job.write_text(yaml.safe_dump({**data, "schema": loose}))
        with pytest.raises(ConfigError) as err:
            preflight(load(job, sets))
        assert str(err.value).startswith("schema: the job's rules differ from those logged with "
                                         "models:/customer-churn@champion: schema.numeric.tenure.min: -10.0 in the "
                                         "job, 0.0 in the model"), kind
