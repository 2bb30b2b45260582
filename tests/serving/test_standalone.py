"""The registered model stands alone: it loads and predicts where churn is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig

import mlflow
import numpy as np
import pandas as pd

from churn.data.validate import validate_partition
from churn.jobs.train import run
from churn.modeling.pipeline import build_pipeline, inference_pipeline
from churn.modeling.preflight import registered_form
from churn.serving.calibration import ChurnClassifier, ScoreCalibrator, member_scores
from churn.serving.trusted import saved_types
from churn.tracking.registry import input_example, log_model
from tests.conftest import ROOT, job_spec

# Python without site processing: third-party packages come from site-packages on PYTHONPATH,
# but churn's editable install (a .pth hook) is not seen, and the working folder is elsewhere.
LOAD = """
import importlib.abc, json, sys

class NoDask(importlib.abc.MetaPathFinder):  # as on a serving host without dask
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("dask", "distributed"):
            raise ImportError("no " + name + " here")

sys.meta_path.insert(0, NoDask())
try:
    import churn
    print(json.dumps({"error": "churn importable before loading: " + churn.__file__})); sys.exit(0)
except ImportError:
    pass
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
rows = pd.read_json(sys.argv[3], orient="split")
out = model.predict(rows)
import churn
print(json.dumps({"probability": out["probability"].tolist(), "churn_from": churn.__file__}))
"""

# Where churn is installed as well (ROOT on the path, no editable hook), loading the model puts
# its partial copy of churn first on sys.path; the rest of churn must still import.
LOAD_BESIDE_CHURN = """
import sys, mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.pyfunc.load_model(sys.argv[2])
import churn.config, churn.modeling.search
print(churn.config.__file__)
"""


def _booster_model(job, source, name: str, families: tuple[str, ...]) -> tuple[str, object]:
    """Pipelines of ``families`` (gradient boosting libraries) fitted on ``source``'s rows, registered in
    the job's store as ``name`` (version 1) in the registered model's form (a stack of them for more than
    one); its URI and the fitted model."""
    raw = pd.read_csv(source, dtype=str, keep_default_na=False)
    clean, _ = validate_partition(raw, job.table, "x", np.arange(len(raw)))
    X, y = clean[job.table.features], clean["_label"].astype(int)
    fitted = [inference_pipeline(build_pipeline(job.table, f, "none", job.seed).set_params(model__n_estimators=40)
                                 .fit(X, y)) for f in families]
    model = registered_form(fitted[0], X, y, families[0])
    if len(fitted) > 1:
        model = ChurnClassifier(members=fitted, names=list(families), calibrator=ScoreCalibrator(
            "sigmoid", (True,) * len(fitted)).fit(np.column_stack([member_scores(m, X) for m in fitted]), y))
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(job.tracking.uri)
    try:
        with mlflow.start_run(experiment_id=mlflow.get_experiment_by_name(job.tracking.experiment).experiment_id):
            log_model(model, input_example(clean, job.table), 0.5, name, job.table)
    finally:
        mlflow.set_tracking_uri(before)
    return f"models:/{name}/1", model


def test_the_registered_model_loads_without_churn_installed(client, tmp_path, telco_subset):
    """A fresh interpreter that can import neither churn nor dask loads models:/…@champion (churn's
    serving code comes with the model) and predicts what the training process predicts; so does
    one holding an XGBoost booster (saved as UBJSON bytes), whose requirements name XGBoost, and a stack of
    LightGBM and CatBoost (their own text and cbm formats), whose requirements name both."""
    # the decision tree: churn's own estimator class (LaplaceDecisionTree) must ship with the model
    # one candidate, one treatment, one repeat: the test is about the model's code, not the search
    job = job_spec(tmp_path, telco_subset, "search.cv=2", "model.families=[decision_tree]", "evaluation.plots=false",
                   "model.grids={decision_tree: {max_depth: [4]}}", "model.imbalance=[none]", "search.repeats=1",
                   "model.feature_sums=false")
    result = run(job, client)
    xgb_uri, xgb_model = _booster_model(job, telco_subset, "churn-xgboost", ("xgboost",))
    gbm_uri, gbm_model = _booster_model(job, telco_subset, "churn-lgbm-catboost", ("lightgbm", "catboost"))
    rows = pd.read_csv(telco_subset, na_values=[" "]).head(20).drop(columns=["customerID", "Churn"])
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "rows.json").write_text(rows.to_json(orient="split"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    models = [(result.model_uri, result.model), (xgb_uri, xgb_model), (gbm_uri, gbm_model)]
    # each model in a fresh interpreter of its own; the interpreters run side by side (one per core)
    loads = [subprocess.Popen(
        [sys.executable, "-S", "-c", LOAD, store, uri, "rows.json"], cwd=work, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        for uri, _ in models]
    beside = subprocess.Popen(
        [sys.executable, "-S", "-c", LOAD_BESIDE_CHURN, store, result.model_uri], cwd=work, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env={"PYTHONPATH": f"{sysconfig.get_paths()['purelib']}:{ROOT}", "PATH": "/usr/bin:/bin",
             "HOME": str(tmp_path)})
    try:
        outputs = [proc.communicate(timeout=300) for proc in [*loads, beside]]
    finally:
        for proc in [*loads, beside]:
            proc.kill()
    for (uri, model), proc, (stdout, stderr) in zip(models, loads, outputs, strict=False):
        assert proc.returncode == 0, stderr[-1500:]
        out = json.loads(stdout.strip().splitlines()[-1])
        assert "error" not in out, out
        assert out["churn_from"].startswith(str(tmp_path / "mlruns")), out["churn_from"]  # the model's own copy
        expected = model.predict_proba(rows)[:, 1]
        assert max(abs(a - b) for a, b in zip(out["probability"], expected, strict=True)) < 1e-12, uri
    codes = [d for d in (tmp_path / "mlruns").rglob("code") if d.is_dir()]
    assert len(codes) == 3
    libraries = {"churn.modeling.boosting.XGBoostClassifier": "xgboost", "churn.modeling.lgbm.LightGBMClassifier":
                 "lightgbm", "churn.modeling.catboost_family.CatBoostClassifier": "catboost"}
    held = []
    for code in codes:  # only serving code ships
        shipped = {p.relative_to(code).as_posix() for p in code.rglob("*.py")}
        assert shipped == {"churn/__init__.py", "churn/modeling/__init__.py", "churn/modeling/features.py",
                           "churn/modeling/trees.py", "churn/modeling/boosting.py", "churn/modeling/lgbm.py",
                           "churn/modeling/catboost_family.py",
                           *(f"churn/serving/{f}" for f in ("__init__.py", "calibration.py", "model_code.py",
                                                            "predict.py", "pyfunc.py", "reasons.py", "rules.py",
                                                            "treeshap.py", "trusted.py"))}, shipped
        # a boosting library is a requirement of the model that holds its model, and of no other
        types = saved_types(str(code.parent / "artifacts" / "pipeline.skops"))
        needs = (code.parent / "requirements.txt").read_text().split()
        for cls, lib in libraries.items():
            assert any(r.split("==")[0] in (lib, f"{lib}-cpu") for r in needs) == (cls in types), (lib, needs)
        held.append(sorted(lib for cls, lib in libraries.items() if cls in types))
    assert sorted(held) == [[], ["catboost", "lightgbm"], ["xgboost"]]
    stdout, stderr = outputs[-1]
    assert beside.returncode == 0, stderr[-1500:]
    assert stdout.strip().splitlines()[-1] == str(ROOT / "churn" / "config" / "__init__.py")
