"""End to end: a Telco subset trained on the cluster, tracked and registered in MLflow."""

from __future__ import annotations

import contextlib
import io
import json
import re

import mlflow
import numpy as np
import pandas as pd
from distributed import get_task_stream
from rich.console import Console

from churn.cli.summary import result_table
from churn.config import JobSpec
from churn.data.generate import generate
from churn.data.ingest import ingest
from churn.data.split import load_splits, search_sample
from churn.jobs.train import _full_data_skipped, _unused_validation_note, run
from churn.serving.calibration import FoldAverage
from churn.tracking.registry import load_churn_model
from tests.conftest import ROOT, TELCO, job_spec


def _run_readme_pyfunc_example(folder, monkeypatch) -> None:
    """The README's pyfunc block, run as written in ``folder`` (its store, the Telco file linked in)."""
    block = re.search(r"```python\n(import mlflow\n.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (folder / "data" / "telco").mkdir(parents=True)
    (folder / "data" / "telco" / "Telco-Customer-Churn.csv").symlink_to(TELCO)
    monkeypatch.chdir(folder)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    assert "probability" in out.getvalue() and "decision" in out.getvalue() and len(out.getvalue().splitlines()) == 6


def test_train_registers_a_champion_that_predicts_raw_rows(client, tmp_path, telco_subset, monkeypatch):
    """The run logs params, metrics and artifacts; models:/customer-churn@champion predicts raw rows
    (also through the README's example)."""
    job = job_spec(tmp_path, telco_subset, "search.cv=3", "model.families=[random_forest]", "model.bagging=false",
                   "model.grids={random_forest: {n_estimators: [10, 30], min_samples_leaf: [1, 4]}}")
    with get_task_stream(client) as stream:
        result = run(job, client)

    # the CV fits ran as tasks on the cluster's workers
    workers = set(client.scheduler_info()["workers"])
    fits = [t for t in stream.data if str(t["key"]).startswith("_fit_group")]
    # two leaf sizes x three imbalance treatments x three folds (n_estimators share one forest), and
    # the feature-sums screen (Telco's MonthlyCharges + TotalCharges): with and without, three folds;
    # and the best candidate scored again on three fresh folds (search.repeats: 2)
    assert len(fits) == 2 * 3 * 3 + 2 * 3 + 3
    assert {t["worker"] for t in fits} <= workers

    n_rows = len(telco_subset.read_text().splitlines()) - 1
    assert result.rows["train"] + result.rows["test"] == n_rows == 1506
    assert 0.5 < result.test.metrics["roc_auc"] <= 1
    assert 0 < result.test.metrics["pr_auc"] <= 1
    assert len(result.search.cv_results) == 4 * 3  # candidates x imbalance treatments
    assert result.search.imbalance in ("none", "class_weight", "smote")
    assert result.rows["final"] == n_rows  # finalised: refitted on train + test

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_data = mlflow.get_run(result.run_id).data
    assert run_data.params["champion"] == "random_forest"
    assert run_data.tags["test_metrics_of"].startswith("the model before finalising")
    assert run_data.metrics["final_rows"] == n_rows
    assert abs(run_data.metrics["test_roc_auc"] - result.test.metrics["roc_auc"]) < 1e-12
    assert "cv_roc_auc" in run_data.metrics
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "search")}
    assert "search/cv_results.csv" in artifacts
    report = mlflow.artifacts.load_text(f"runs:/{result.run_id}/evaluation/classification_report.txt")
    assert "churn" in report and "precision" in report

    model = mlflow.pyfunc.load_model("models:/customer-churn@champion")
    assert model.metadata.signature is not None
    raw = pd.read_csv(telco_subset, na_values=[" "]).head(25).drop(columns=["customerID", "Churn"])
    out = model.predict(raw)
    assert list(out.columns) == ["probability", "decision"]
    assert len(out) == 25
    assert out["probability"].between(0, 1).all()
    expected = result.model.predict_proba(raw)[:, 1]  # the finalised, calibrated model
    assert (abs(out["probability"].to_numpy() - expected) < 1e-12).all()
    assert (out["decision"] == (expected >= result.threshold.value).astype(int)).all()
    assert abs(run_data.metrics["decision_threshold"] - result.threshold.value) < 1e-12
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")}
    assert {"plots/roc.png", "plots/precision_recall.png", "plots/calibration.png", "plots/lift_gains.png",
            "plots/confusion_matrix.png", "plots/permutation_importance.png",
            "plots/cv_score_by_family.png"} <= plots
    version = mlflow.MlflowClient().get_model_version_by_alias("customer-churn", "champion")
    assert version.run_id == result.run_id
    graph = mlflow.artifacts.load_text(f"runs:/{result.run_id}/graph/stages.mmd")
    assert f"{result.rows['train']:,} train / {result.rows['test']:,} test" in graph
    assert f"{result.seconds['ingest']:.1f} s" in graph and "search: random_forest" in graph
    assert "graph/stages.png" in {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "graph")}
    _run_readme_pyfunc_example(tmp_path, monkeypatch)


def test_same_seed_same_split_and_search(client, tmp_path, telco_subset):
    """Same data, config and seed give the same rows in each split and the same CV scores."""
    grid = "model.grids={random_forest: {n_estimators: [10], min_samples_leaf: [1, 2]}}"
    args = ("search.cv=2", "model.families=[random_forest]", "evaluation.plots=false", grid)
    a = run(job_spec(tmp_path / "a", telco_subset, *args), client)
    b = run(job_spec(tmp_path / "b", telco_subset, *args), client)
    assert a.rows == b.rows
    assert (a.test.summary.pos == b.test.summary.pos).all() and (a.test.summary.neg == b.test.summary.neg).all()
    assert a.search.cv_results["mean_test_score"].tolist() == b.search.cv_results["mean_test_score"].tolist()


def test_mlc_job_trains_by_config_only(client, tmp_path):
    """jobs/train-mlc.yaml (no id column, yes/no label, 51 states) trains and registers, with the usage sums.

    Every family of the job's config is searched, without the imbalance treatments (one grid point
    each instead of three: the treatments are searched in tests/modeling/test_search.py)."""

    job = job_spec(tmp_path, ROOT / "data" / "mlc" / "mlc_churn.csv", "search.cv=3", "evaluation.plots=false",
                   "model.grids={random_forest: {n_estimators: [30], min_samples_leaf: [2]}, "
                   "hist_gradient_boosting: {max_iter: [50]}}", "model.imbalance=[none]",
                   base=ROOT / "jobs" / "train-mlc.yaml")
    result = run(job, client)
    man = result.dataset.manifest
    assert man.rows_read == man.rows_kept == 5000
    assert man.id_column is None
    assert result.rows["train"] + result.rows["test"] == 5000
    assert abs(result.test.metrics["positive_rate"] - 0.1414) < 0.03
    assert result.test.metrics["roc_auc"] > 0.8
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    # usage comes in day/eve/night/intl parts: CV keeps their sums, and the served model computes them
    assert mlflow.get_run(result.run_id).data.params["feature_sums"] == "sum_minutes,sum_calls,sum_charge"
    assert "sum_charge" in result.kept_features
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(result_table(job, result, wall=1.0))  # the summary `churn train` prints
    [line] = [ln for ln in console.export_text().splitlines() if "feature sums (model.feature_sums)" in ln]
    assert "sum_minutes, sum_calls, sum_charge" in line
    model = mlflow.pyfunc.load_model("models:/customer-churn-mlc@champion")
    rows = pd.read_csv(ROOT / "data" / "mlc" / "mlc_churn.csv").head(10).drop(columns=["churn"])
    assert model.predict(rows)["probability"].between(0, 1).all()


def test_search_sample_is_stratified_exact_and_deterministic(client, tmp_path):
    """Over search.max_rows, the sample has exactly max_rows rows, keeps the class ratio, repeats."""


    src = tmp_path / "src"
    generate(src, rows=8_000, files=2, seed=9)
    job = job_spec(tmp_path, f"{src}/*.csv", "search.max_rows=1000", base=ROOT / "jobs" / "ingest.yaml")
    ds = ingest(job, client)
    ddf = load_splits(str(ds.data_path), job.split.resolved(ds.manifest.rows_kept, job.search.max_rows), job.seed)
    train = ddf[ddf["_split"] == "train"]
    a, n_train = search_sample(train, job.search.max_rows, job.seed, client)
    b, _ = search_sample(train, job.search.max_rows, job.seed, client)
    full = train.compute()
    assert n_train == len(full) > 1000
    assert abs(len(a) - 1000) <= 1
    assert abs(a["_label"].mean() - full["_label"].mean()) < 0.002
    assert a["customerID"].tolist() == b["customerID"].tolist()
    assert set(a["customerID"]) <= set(full["customerID"])


def test_all_numeric_table_with_smote_registers_a_loadable_model(client, tmp_path):
    """Dense numeric features (SMOTE's neighbours use a KD-tree): the job registers a model that loads."""
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(rng.normal(size=(900, 6)).round(4), columns=[f"f{i}" for i in range(6)])
    frame["churn"] = np.where(frame["f0"] + rng.normal(scale=0.7, size=900) > 1.0, "yes", "no")
    src = tmp_path / "numeric.csv"
    frame.to_csv(src, index=False)
    job = JobSpec.model_validate({
        "data": {"source": str(src), "output": str(tmp_path / "ds")},
        "schema": {"id": None, "label": "churn", "positive": "yes", "negative": "no",
                   "numeric": [f"f{i}" for i in range(6)]},
        "model": {"families": ["random_forest"], "imbalance": "smote",
                  "grids": {"random_forest": {"n_estimators": [10], "min_samples_leaf": [2]}}},
        "search": {"cv": 3}, "evaluation": {"plots": False},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "registered_model": "numeric-churn"},
    })
    result = run(job, client)
    assert all("resample" not in m.named_steps for m in result.model.members)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/numeric-churn@champion")
    out = model.predict(frame.drop(columns="churn").head(20))
    np.testing.assert_allclose(out["probability"], result.model.predict_proba(frame.head(20))[:, 1], atol=1e-12)


def _check_mlflow_layout(folder, result) -> None:
    """The run as an MLflow user reads it back: one experiment of kind model training holding the
    parent and its per-family children, names that tell runs apart, readable param names, the
    table's rules as one artifact (no rule params), and a registered version that says what it is."""
    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.get_experiment_by_name("customer-churn")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = client.get_run(result.run_id)
    assert parent.info.experiment_id == exp.experiment_id
    assert re.fullmatch(r"telco-churn \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", parent.info.run_name)
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert sorted(c.info.run_name for c in children) == [f"{parent.info.run_name} / {f}"
                                                          for f in sorted(result.families)]
    assert not client.search_runs(["0"])  # nothing in MLflow's Default experiment
    params = {c.data.tags["family"]: set(c.data.params) for c in children}
    assert {"C", "resample", "class_weight"} <= params["logistic_regression"]
    assert {"max_depth", "resample", "class_weight"} <= params["decision_tree"]
    names = set(parent.data.params).union(*params.values())
    assert not [n for n in names if "__" in n or "/" in n or n.startswith(("best_", "rules"))]
    assert {f"{m}.C" if m == "logistic_regression" else f"{m}.max_depth" for m in result.champion.members} <= names
    rules = json.loads(mlflow.artifacts.load_text(f"runs:/{result.run_id}/data/rules.json"))
    assert rules["numeric"]["TotalCharges"] == {"integer": False, "min": 0.0, "max": None, "nullable": True}
    version = client.get_model_version("customer-churn", result.model_version)
    tags = version.tags
    assert (tags["family"], tags["members"]) == (result.champion.name, ", ".join(result.champion.members))
    assert float(tags["test_roc_auc"]) == round(result.test.metrics["roc_auc"], 4)
    assert float(tags["cv_roc_auc"]) == round(result.champion.cv_score, 4)
    assert float(tags["threshold"]) == round(result.threshold.value, 4)
    assert int(tags["rows_fitted"]) == result.rows["final"]
    assert (tags["dataset"], tags["run_id"]) == (result.dataset.manifest.dataset, result.run_id)
    what = "stack of" if result.champion.name == "stacked_ensemble" else result.champion.name
    assert version.description.startswith(f"churn model from job telco-churn: {what}")
    assert f"Run {result.run_id}." in version.description


def test_stack_calibration_and_finalising(client, tmp_path, telco_subset):
    """Two families: the champion is the best CV score among them and their stack; the registered
    model is the calibration map over the champion's members, refitted on every labelled row, and
    the threshold comes from calibrated out-of-fold probabilities."""
    args = ("search.cv=3", "evaluation.plots=false", "model.families=[logistic_regression, decision_tree]",
            "model.grids={logistic_regression: {C: [0.1, 1.0]}, decision_tree: {max_depth: [3, 5]}}",
            "model.ensemble=2", "model.bagging=false")
    result = run(job_spec(tmp_path / "a", telco_subset, *args), client)
    _check_mlflow_layout(tmp_path / "a", result)
    champ = result.champion
    # chosen on both CV repeats: the search's folds and the fresh folds each best candidate was rescored on
    assert champ.repeats == 2 and all(len(r.rescored_oof) == 1 for r in result.families.values())
    scores = dict(champ.family_scores) | {"stacked_ensemble": champ.stack_score}
    assert champ.cv_score == max(scores.values()) and champ.name == max(scores, key=scores.get)
    assert champ.calibration.method in ("none", "sigmoid", "isotonic")
    assert np.isfinite(champ.oof_proba).all() and champ.oof_proba.min() >= 0 and champ.oof_proba.max() <= 1
    assert result.model.names == champ.members
    assert result.rows["final"] == result.rows["train"] + result.rows["test"]

    kept = run(job_spec(tmp_path / "b", telco_subset, *args, "model.finalize=false"), client)
    assert kept.rows["final"] == kept.rows["search"]
    raw = pd.read_csv(telco_subset, na_values=[" "]).head(40).drop(columns=["customerID", "Churn"])
    search_fit = kept.families[kept.champion.members[0]].best_estimator
    if kept.champion.name != "stacked_ensemble":  # not finalised: the search's own refit, calibrated
        np.testing.assert_allclose(kept.model.predict_proba(raw)[:, 1],
                                   kept.champion.calibration.calibrator.predict(
                                       search_fit.predict_proba(raw)[:, 1]), atol=1e-12)
    # finalising changes the members (more rows), not the calibration map or the test metrics
    assert result.test.metrics == kept.test.metrics
    assert not np.allclose(result.model.predict_proba(raw), kept.model.predict_proba(raw))


def test_a_rerun_reuses_the_search(client, tmp_path, telco_subset):
    """The same job run again (same data, spec and code) reuses the first run's search: no fit runs,
    and the results, champion and test metrics are the same; the bagged members (the fold models
    of the fresh repeat, not refitted) come back from the cache; a changed grid searches again."""
    args = ("search.cv=2", "model.families=[logistic_regression,decision_tree]", "evaluation.plots=false",
            "model.feature_sums=true", "model.bagging=true")
    first = run(job_spec(tmp_path, telco_subset, *args), client)
    with get_task_stream(client) as stream:
        again = run(job_spec(tmp_path, telco_subset, *args), client)
    assert not [t for t in stream.data if str(t["key"]).startswith(("_fit_group", "_fit_fold", "_refit"))]
    assert first.bagging.bagged and again.bagging.bagged and "finalize" in again.row_notes
    raw = pd.read_csv(telco_subset, na_values=[" "]).head(30).drop(columns=["customerID", "Churn"])
    for a, b in zip(first.model.members, again.model.members, strict=True):
        assert isinstance(b, FoldAverage) and len(b.members) == 2
        np.testing.assert_array_equal(b.predict_proba(raw), a.predict_proba(raw))
    assert mlflow.get_run(again.run_id).data.tags["churn.search_reused"]
    # the reused run still records the sums its pipelines hold (read from them: no screen ran)
    for r in (first, again):
        assert mlflow.get_run(r.run_id).data.params["feature_sums"] == "sum_charges"
    for fam in first.families:
        pd.testing.assert_frame_equal(again.families[fam].cv_results, first.families[fam].cv_results)
    assert again.champion.name == first.champion.name
    assert again.test.metrics["roc_auc"] == first.test.metrics["roc_auc"]
    # same data, spec, code and seed: nothing new is registered
    assert (first.model_version, first.promotion.registered) == ("1", True)
    assert (again.model_version, again.promotion.registered) == ("1", False)
    assert again.promotion.line.startswith("unchanged: version 1 already registered (same data, spec, code and seed)")
    changed = run(job_spec(tmp_path, telco_subset, *args, "model.grids.decision_tree.max_depth=[3]"), client)
    assert "churn.search_reused" not in mlflow.get_run(changed.run_id).data.tags
    assert (changed.model_version, changed.promotion.registered) == ("2", True)
    versions = mlflow.MlflowClient().search_model_versions("name = 'customer-churn'")
    assert sorted(str(v.version) for v in versions) == ["1", "2"]


def test_a_table_above_the_sample_trains_on_every_row_and_chooses_on_validation(client, tmp_path):
    """2,000 rows and search.max_rows 500: the search runs on 500 train rows, xgboost is then trained on
    every train row with xgboost.dask, both are scored on the validation split (split.validation auto:
    10 %), and the better one is registered; fewer-row fits are said in the summary and the run."""
    src = tmp_path / "src"
    generate(src, rows=2_000, files=1, seed=4)
    job = job_spec(tmp_path, f"{src}/*.csv", "search.max_rows=500", "search.cv=3", "search.repeats=1",
                   "evaluation.plots=false", "model.feature_sums=false",
                   "model.families=[logistic_regression, svm, xgboost]",
                   "model.imbalance=[none]", "model.ensemble=0", "model.max_rows={svm: 200}",
                   "model.grids={logistic_regression: {C: [1.0]}, svm: {C: [1.0]}, "
                   "xgboost: {max_depth: [3], learning_rate: [0.1], min_child_weight: [1]}}")
    result = run(job, client)
    rows, choice = result.rows, result.full_data
    assert result.validation == 0.1 and 150 < rows["validation"] < 250
    assert rows["train"] + rows["validation"] + rows["test"] == 2_000
    assert abs(rows["search"] - 500) <= 1 < rows["train"] - 500
    assert choice is not None and choice.validation_rows == rows["validation"] == choice.calibration_rows
    assert (choice.full_rows, choice.sample_rows) == (rows["train"], rows["search"])
    assert choice.winner == ("full-data" if choice.full_score > choice.sample_score else "sample")
    if choice.winner == "full-data":  # the registered model learned from every train row; map and threshold
        assert result.model.names == ["xgboost"] and rows["final"] == rows["train"]  # from validation
        assert result.threshold.source.startswith("the validation split (cross-fitted calibrated probabilities)")
    else:
        assert result.model.names == result.champion.members and rows["final"] == rows["search"]
        assert result.threshold.source == "out-of-fold CV predictions"
    notes = result.row_notes
    assert notes["search"] == f"500 of {rows['train']:,} train rows (search.max_rows=500)"
    assert notes["svm"] == "each fit on at most 200 of 500 search rows (model.max_rows.svm)"
    assert notes["finalize"].startswith(f"skipped: the train split ({rows['train']:,} rows) is larger than "
                                        "search.max_rows=500")

    data = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(result.run_id).data
    assert data.params["rows_search"] == notes["search"] and data.params["rows_svm"] == notes["svm"]
    assert data.params["rows_finalize"] == notes["finalize"]
    assert data.params["validation_fraction"] == "auto" and float(data.params["validation_fraction_used"]) == 0.1
    assert data.tags["full_data_winner"] == choice.winner and data.tags["threshold_source"] == result.threshold.source
    assert data.metrics["full_data_rows"] == rows["train"] and data.metrics["sample_champion_rows"] == rows["search"]
    # the depth ladder ran on the whole train split (5 x 500 search rows > train rows), from the sample's depth 3
    assert choice.ladder.startswith("depth 3: ") and f"on {rows['train']:,} train rows" in choice.ladder
    assert data.params["full_data_depth_ladder"] == choice.ladder
    assert choice.ladder.endswith(f"depth {choice.depth} kept")
    assert data.params["full_data_max_depth"] == str(choice.depth)
    assert data.metrics["validation_roc_auc_full_data"] == choice.full_score
    assert data.metrics["final_rows"] == rows["final"]
    # the run and the version name the registered model's calibration, and its monitoring reference holds
    # that model's scores on rows it was not fitted on (the full-data model's: the validation rows)
    assert f"calibration {choice.calibration};" in choice.line
    assert data.tags["calibration"] == result.model.calibrator.method
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    version = mlflow.MlflowClient().get_model_version(job.tracking.registered_model, result.model_version)
    assert f"calibration {result.model.calibrator.method}." in version.description
    reference = load_churn_model(result.model_uri).reference()
    assert sum(reference["scores"]["counts"]) == (rows["validation"] if choice.winner == "full-data"
                                                  else rows["search"])
    console = Console(record=True, width=250, file=io.StringIO())
    console.print(result_table(job, result, wall=1.0))
    text = console.export_text()
    assert any("fewer rows: search" in ln and notes["search"] in ln for ln in text.splitlines())
    assert "full-data model vs sample champion" in text and f"won by {choice.margin:.4f} validation roc_auc" in text
    assert "fewer rows: finalize" in text
    card = mlflow.artifacts.load_text(f"runs:/{result.run_id}/model_card/card.md")  # the version's model card
    assert choice.line in card and f"| {rows['search']:,} of {rows['train']:,} |" in card
    assert f"Capped family svm: {notes['svm']}." in card


def test_without_validation_rows_the_full_data_fit_is_skipped_and_said(tmp_path):
    """A train split above the sample but no validation rows (split.validation 0, or auto on a train
    split just above search.max_rows, where a share would bring it back within) skips the full-data
    fit with the reason, instead of failing it after the search; no xgboost family: said too."""
    rows = {"train": 224_000, "search": 200_000, "validation": 0}
    auto = job_spec(tmp_path, TELCO)
    assert auto.split.fraction(280_000, 200_000) == 0.0 and "xgboost" in auto.model.families
    why = _full_data_skipped(auto, rows)
    assert why.startswith("no validation rows to stop early on and choose with (split.validation auto): the "
                          "registered model learned from the search sample only (200,000 of 224,000 train rows)")
    assert why.endswith("raise search.max_rows to 224,000 to search on every train row")
    assert _full_data_skipped(auto, {**rows, "validation": 28_000}) is None
    no_xgb = job_spec(tmp_path, TELCO, "model.families=[logistic_regression]")
    assert _full_data_skipped(no_xgb, {**rows, "validation": 28_000}).startswith("the job has no xgboost family")


def test_validation_rows_nothing_uses_are_said():
    """split.validation set by hand where no full-data fit runs: the held-out rows are a note, not lost silently."""
    small = {"train": 5_000, "search": 5_000, "validation": 700}
    assert _unused_validation_note(small, full_data=False) == {"validation": (
        "700 labelled rows held out as validation are used by nothing (the train split fits in search.max_rows, so "
        "no full-data fit): set split.validation to auto or 0 to train on them")}
    assert _unused_validation_note({**small, "validation": 0}, full_data=False) == {}
    assert _unused_validation_note({"train": 300_000, "search": 200_000, "validation": 30_000}, full_data=True) == {}
