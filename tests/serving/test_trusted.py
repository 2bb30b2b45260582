"""The serving side: skops with a fixed trusted list, and no dask or pydantic where a model is served."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import subprocess
import sys
import zipfile

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io as sio
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


def _swap(node: object, cls: str, payload: dict) -> object:
    """The skops schema tree ``node`` with every object of class ``cls`` replaced by ``payload``."""
    if isinstance(node, dict):
        return payload if node.get("__class__") == cls else {k: _swap(v, cls, payload) for k, v in node.items()}
    return [_swap(v, cls, payload) for v in node] if isinstance(node, list) else node


def test_a_tampered_file_is_refused_before_anything_in_it_runs(tmp_path, small_xy):
    """A saved model edited so that loading it calls open(marker, "w") is refused, and the marker is
    not written; the same file loaded without the trusted-type check does write it."""
    X, y = small_xy
    path = tmp_path / "model.skops"
    dump_pipeline(Pipeline([("model", LogisticRegression())]).fit(X, y), str(path))
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    marker = tmp_path / "pwned"

    def text(value: str, node_id: int) -> dict:
        return {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode", "content": json.dumps(value),
                "is_json": True, "__id__": node_id}

    # skops' ConstructorFromReduceNode calls module.class(*content): here builtins.open(marker, "w")
    payload = {"__class__": "open", "__module__": "builtins", "__loader__": "ConstructorFromReduceNode", "__id__": 1,
               "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode", "__id__": 2,
                           "content": [text(str(marker), 3), text("w", 4)]}}
    schema = json.loads(files["schema.json"])
    files["schema.json"] = json.dumps(_swap(schema, "LogisticRegression", payload)).encode()
    assert files["schema.json"] != json.dumps(schema).encode()
    tampered = tmp_path / "tampered.skops"
    with zipfile.ZipFile(tampered, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(UntrustedModelError, match="builtins.open"):
        load_pipeline(str(tampered))
    assert not marker.exists()
    # the payload is live: trusting whatever the file names (no check) writes the marker
    with contextlib.suppress(Exception):
        sio.load(tampered, trusted=sio.get_untrusted_types(file=tampered))
    assert marker.exists()


@pytest.mark.cluster
def test_serving_code_imports_neither_dask_nor_pydantic():
    """No module in churn/serving (nor the boosting libraries' wrappers) names dask, distributed or pydantic,
    and importing them loads none."""
    boosters = [ROOT / "churn" / "modeling" / f for f in ("boosting.py", "lgbm.py", "catboost_family.py")]
    for path in [*SERVING.glob("*.py"), *boosters]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in {"dask", "distributed", "pydantic"}, f"{path.name} imports {name}"
    # dask may be installed beside scikit-learn, which then imports it on its own: block the
    # names instead, as on a serving host without them (MLflow itself needs pydantic)
    # the boosting wrappers import their library on first use: xgboost, lightgbm and catboost themselves
    # must not need dask either
    for modules, blocked in [("churn.serving.trusted, churn.modeling.features, churn.modeling.boosting, xgboost, "
                              "churn.modeling.lgbm, lightgbm, churn.modeling.catboost_family, catboost",
                              "'dask', 'distributed', 'pydantic'"),
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


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny churn model logged and registered as version 1 of ``m`` (alias ``champion``) in a
    SQLite registry whose artifacts live under the returned folder's ``store``."""
    from churn.config import TableSchema
    from churn.tracking.registry import log_model, set_alias

    tmp = tmp_path_factory.mktemp("registry")
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 2)), columns=["a", "b"])
    pipe = Pipeline([("model", LogisticRegression())]).fit(X, (X["a"] > 0).astype(int))
    schema = TableSchema(label="y", positive="1", negative="0", numeric={"a": {}, "b": {}})
    experiment = mlflow.create_experiment("verify", artifact_location=(tmp / "store").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_model(pipe, X.head(3), 0.5, "m", schema)
    set_alias("m", "champion", info.registered_model_version)
    [folder] = [p.parent for p in (tmp / "store").rglob("MLmodel")]
    yield folder, pipe, X
    mlflow.set_tracking_uri(before)


def test_registration_records_the_sha256_of_every_stored_file(registered):
    """The version's tag lists every file of the model folder in the artifact store, with its sha256
    (computed here from the stored bytes)."""
    folder, _, _ = registered
    tag = json.loads(mlflow.MlflowClient().get_model_version("m", "1").tags["churn.sha256"])
    stored = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in folder.rglob("*") if p.is_file()}
    assert {"model_code.py", "MLmodel", "artifacts/pipeline.skops", "code/churn/serving/trusted.py"} <= set(stored)
    assert tag == stored


def test_code_planted_in_the_store_runs_through_mlflow_but_not_through_churn(registered, tmp_path, monkeypatch):
    """model_code.py in the store edited to write a marker: MLflow's own loader runs it (the marker
    appears); churn's loaders and ``churn verify`` refuse with one line naming the file, and the
    marker is not written. The untouched model loads and predicts as logged."""
    from typer.testing import CliRunner

    from churn.cli.app import app
    from churn.tracking.registry import load_churn_model
    from churn.tracking.verify import ArtifactMismatchError

    folder, pipe, X = registered
    loaded = load_churn_model("models:/m@champion")
    assert (loaded.name, loaded.version) == ("m", "1")
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(X), pipe.predict_proba(X))
    marker = tmp_path / "pwned"
    code = folder / "model_code.py"
    original = code.read_text()
    code.write_text(f"open({str(marker)!r}, 'w').write('ran')\n" + original)
    path = list(sys.path)
    try:
        mlflow.pyfunc.load_model("models:/m/1")  # no check: the planted line runs
        assert marker.exists()
        marker.unlink()
        with pytest.raises(ArtifactMismatchError, match=r"version 1 of m\): model_code.py differs from its recorded"):
            load_churn_model("models:/m@champion")
        uri = mlflow.get_tracking_uri()
        out = CliRunner().invoke(app, ["verify", "models:/m/1", "--tracking-uri", uri])
        assert out.exit_code == 2 and len(out.output.strip().splitlines()) == 1, out.output
        assert "model_code.py differs" in out.output
        monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("serve started MLflow on a tampered model"))
        out = CliRunner().invoke(app, ["serve", "-m", "models:/m@champion", "--tracking-uri", uri])
        assert out.exit_code == 2 and "model_code.py differs" in out.output, out.output
        assert not marker.exists()
    finally:
        code.write_text(original)
        sys.path[:] = path


def test_an_added_or_missing_file_is_a_mismatch(registered):
    """A file added to the stored model, or one removed from it, is named and refused."""
    from churn.tracking.verify import ArtifactMismatchError, verified_model

    folder, _, _ = registered
    extra = folder / "code" / "churn" / "serving" / "sitecustomize.py"
    extra.write_text("raise SystemExit\n")
    try:
        with pytest.raises(ArtifactMismatchError, match="code/churn/serving/sitecustomize.py is not in the registered"):
            verified_model("models:/m@champion")
    finally:
        extra.unlink()
    example = folder / "input_example.json"
    saved = example.read_bytes()
    example.unlink()
    try:
        with pytest.raises(ArtifactMismatchError, match="input_example.json is missing"):
            verified_model("models:/m@champion")
    finally:
        example.write_bytes(saved)
    assert verified_model("models:/m@champion").version == "1"


def test_only_a_version_with_recorded_digests_loads(registered):
    """A version registered without churn (no digests tag), a run URI and a logged-model URI are refused."""
    from churn.config import ConfigError
    from churn.tracking.verify import ArtifactMismatchError, verified_model

    v1 = mlflow.MlflowClient().get_model_version("m", "1")
    v2 = mlflow.register_model(v1.source, "m")
    with pytest.raises(ArtifactMismatchError, match="has no churn.sha256 tag.*churn train --promote"):
        verified_model(f"models:/m/{v2.version}")
    with pytest.raises(ConfigError, match="is not a registered model"):
        verified_model(f"runs:/{v1.run_id}/model")
    with pytest.raises(ConfigError, match="is a logged model, not a registered version"):
        verified_model(v1.source)


def test_a_version_whose_digests_tag_is_not_a_list_leaves_no_copy(registered, tmp_path):
    """A churn.sha256 tag that is not a JSON object of digests is refused before anything is
    downloaded: the folder given for the checked copy stays empty (no unchecked copy to serve)."""
    from churn.tracking.verify import DIGESTS_TAG, ArtifactMismatchError, verified_model

    client = mlflow.MlflowClient()
    bad = mlflow.register_model(client.get_model_version("m", "1").source, "m")
    client.set_model_version_tag("m", bad.version, DIGESTS_TAG, "not json")
    with pytest.raises(ArtifactMismatchError, match="tag is not a list of digests"):
        verified_model(f"models:/m/{bad.version}", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_version_whose_digests_cannot_be_recorded_is_not_left_registered(registered, monkeypatch):
    """Registration whose digests do not fit a registry tag fails with one line, and the version
    it had just created is deleted again (a version without digests can never be loaded)."""
    from churn.config import ConfigError, TableSchema
    from churn.tracking import verify
    from churn.tracking.registry import log_model

    _, pipe, X = registered
    monkeypatch.setattr(verify, "DIGESTS_MAX_CHARS", 10)
    schema = TableSchema(label="y", positive="1", negative="0", numeric={"a": {}, "b": {}})
    with mlflow.start_run(), pytest.raises(ConfigError, match="more than a registry tag holds"):
        log_model(pipe, X.head(3), 0.5, "m-no-digests", schema)
    assert mlflow.MlflowClient().search_model_versions("name = 'm-no-digests'") == []
