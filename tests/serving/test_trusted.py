"""The serving side: skops with a fixed trusted list, and no dask or pydantic where a model is served."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from churn.serving.trusted import TRUSTED_TYPES, UntrustedModelError, dump_pipeline, load_pipeline
from tests.conftest import ROOT

SERVING = ROOT / "churn" / "serving"


@pytest.fixture
def small_xy() -> tuple[pd.DataFrame, np.ndarray]:
    """100 seeded rows of 3 numeric columns and a 0/1 label."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(100, 3)), columns=["a", "b", "c"])
    return X, (X["a"] > 0).to_numpy(int)


def test_round_trip_of_a_trusted_pipeline(tmp_path, small_xy):
    """A scaler + logistic regression saves and loads back with the same predictions."""
    X, y = small_xy
    pipe = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression())]).fit(X, y)
    path = str(tmp_path / "p.skops")
    dump_pipeline(pipe, path)
    np.testing.assert_array_equal(load_pipeline(path).predict_proba(X), pipe.predict_proba(X))


def test_a_model_needing_an_untrusted_type_is_refused(tmp_path, small_xy):
    """A KD-tree (not on the list) is named and refused, on dump and on load."""
    X, y = small_xy
    knn = KNeighborsClassifier(algorithm="kd_tree").fit(X, y)
    with pytest.raises(UntrustedModelError, match="KDTree"):
        dump_pipeline(knn, str(tmp_path / "knn.skops"))
    assert not any("KDTree" in t for t in TRUSTED_TYPES)


def test_a_tampered_file_is_refused_before_anything_in_it_runs(tmp_path, small_xy):
    """A saved model edited to name os.system as a type is refused; the command never runs."""
    X, y = small_xy
    path = tmp_path / "model.skops"
    dump_pipeline(Pipeline([("model", LogisticRegression())]).fit(X, y), str(path))
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    marker = tmp_path / "pwned"
    schema = files["schema.json"].decode()
    assert '"__class__": "LogisticRegression"' in schema
    files["schema.json"] = schema.replace('"__class__": "LogisticRegression"', '"__class__": "system"').replace(
        '"__module__": "sklearn.linear_model._logistic"', '"__module__": "os"').encode()
    tampered = tmp_path / "tampered.skops"
    with zipfile.ZipFile(tampered, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(UntrustedModelError, match="os.system"):
        load_pipeline(str(tampered))
    assert not marker.exists()


def test_serving_code_imports_neither_dask_nor_pydantic():
    """No module in churn/serving names dask, distributed or pydantic, and importing them loads none."""
    for path in SERVING.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in {"dask", "distributed", "pydantic"}, f"{path.name} imports {name}"
    # dask may be installed beside scikit-learn, which then imports it on its own: block the
    # names instead, as on a serving host without them (MLflow itself needs pydantic)
    for modules, blocked in [("churn.serving.trusted, churn.modeling.features", "'dask', 'distributed', 'pydantic'"),
                             ("churn.serving.pyfunc", "'dask', 'distributed'")]:
        code = ("import sys, importlib.abc\n"
                "class Block(importlib.abc.MetaPathFinder):\n"
                "    def find_spec(self, name, path, target=None):\n"
                f"        if name.split('.')[0] in ({blocked}):\n"
                "            raise ImportError('blocked: ' + name)\n"
                "sys.meta_path.insert(0, Block())\n"
                f"import {modules}\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert out.returncode == 0, out.stderr[-2000:]
