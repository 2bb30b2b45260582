"""The registered model stands alone: it loads and predicts where churn is not installed."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig

import pandas as pd

from churn.jobs.train import run
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


def test_the_registered_model_loads_without_churn_installed(client, tmp_path, telco_subset):
    """A fresh interpreter that can import neither churn nor dask loads models:/…@champion (churn's
    serving code comes with the model) and predicts what the training process predicts."""
    # the decision tree: churn's own estimator class (LaplaceDecisionTree) must ship with the model
    job = job_spec(tmp_path, telco_subset, "search.cv=2", "model.families=[decision_tree]", "evaluation.plots=false",
                   "model.grids={decision_tree: {max_depth: [4]}}")
    result = run(job, client)
    rows = pd.read_csv(telco_subset, na_values=[" "]).head(20).drop(columns=["customerID", "Churn"])
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "rows.json").write_text(rows.to_json(orient="split"))
    proc = subprocess.run(
        [sys.executable, "-S", "-c", LOAD, f"sqlite:///{tmp_path / 'mlflow.db'}", result.model_uri,
         "rows.json"],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-1500:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, out
    assert out["churn_from"].startswith(str(tmp_path / "mlruns")), out["churn_from"]  # the model's own copy
    expected = result.model.predict_proba(rows)[:, 1]
    assert max(abs(a - b) for a, b in zip(out["probability"], expected, strict=True)) < 1e-12
    [code] = [d for d in (tmp_path / "mlruns").rglob("code") if d.is_dir()]  # only serving code ships
    shipped = {p.relative_to(code).as_posix() for p in code.rglob("*.py")}
    assert shipped == {"churn/__init__.py", "churn/modeling/__init__.py", "churn/modeling/features.py",
                       "churn/modeling/trees.py",
                       *(f"churn/serving/{f}" for f in ("__init__.py", "calibration.py", "model_code.py", "pyfunc.py",
                                                        "rules.py", "trusted.py"))}, shipped
    beside = subprocess.run(
        [sys.executable, "-S", "-c", LOAD_BESIDE_CHURN, f"sqlite:///{tmp_path / 'mlflow.db'}", result.model_uri],
        cwd=work, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": f"{sysconfig.get_paths()['purelib']}:{ROOT}", "PATH": "/usr/bin:/bin",
             "HOME": str(tmp_path)})
    assert beside.returncode == 0, beside.stderr[-1500:]
    assert beside.stdout.strip().splitlines()[-1] == str(ROOT / "churn" / "config" / "__init__.py")
