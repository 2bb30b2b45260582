"""Every table shape `churn schema infer` can describe trains and registers a model (issue 9, item 6)."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from churn.config import JobSpec
from churn.jobs.train import run


def _table(shape: str, rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """A seeded table of one shape and its schema section."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    churn = signal + rng.normal(scale=0.8, size=rows) > 0.9
    frame = pd.DataFrame({"customer": [f"C{i:05d}" for i in range(rows)]})
    schema: dict = {"id": "customer", "label": "churned", "positive": "Yes", "negative": "No",
                    "numeric": {"usage": {}}, "categorical": {"plan": None}}
    frame["usage"] = (signal * 10 + 50).round(2)
    frame["plan"] = rng.choice(["basic", "plus", "pro"], size=rows)
    if shape == "wide":  # 64 numeric columns besides
        for j in range(64):
            frame[f"m{j:02d}"] = rng.normal(size=rows).round(3)
            schema["numeric"][f"m{j:02d}"] = {}
    elif shape == "high_cardinality":  # 300 city levels, most seen once or twice
        frame["city"] = [f"city-{k}" for k in rng.integers(0, 300, size=rows)]
        schema["categorical"]["city"] = None
    elif shape == "all_numeric":
        frame["usage2"] = rng.normal(size=rows).round(3)
        schema["numeric"]["usage2"] = {}
        del frame["plan"], schema["categorical"]["plan"]
        schema["categorical"] = {}
    elif shape == "no_id":
        del frame["customer"]
        schema["id"] = None
    elif shape == "numeric_label":  # 0/1 label, written unquoted in YAML
        schema.update(positive=1, negative=0)
    elif shape == "na_text":  # "NA" and "Unknown" are levels, blanks allowed
        frame["plan"] = np.where(rng.random(rows) < 0.2, "NA", np.where(rng.random(rows) < 0.2, "Unknown",
                                                                        frame["plan"]))
        frame.loc[rng.random(rows) < 0.05, "plan"] = ""
        schema["categorical"]["plan"] = {"nullable": True}
    labels = ("1", "0") if shape == "numeric_label" else ("Yes", "No")
    frame["churned"] = np.where(churn, labels[0], labels[1])
    return frame, schema


@pytest.mark.parametrize("shape", ["wide", "high_cardinality", "all_numeric", "no_id", "numeric_label", "na_text"])
def test_table_shape_trains_and_registers(client, tmp_path, shape):
    """A table of this shape goes through the default model settings (two families here, for time)
    and the registered model scores its raw rows."""
    frame, schema = _table(shape)
    src = tmp_path / f"{shape}.csv"
    frame.to_csv(src, index=False)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    job = JobSpec.model_validate({
        "data": {"source": str(src), "output": str(tmp_path / "ds")}, "schema": schema,
        "model": {"families": ["logistic_regression", "hist_gradient_boosting"],
                  "grids": {"logistic_regression": {"C": [1.0]}, "hist_gradient_boosting": {"max_leaf_nodes": [7]}}},
        # two folds, one repeat: the test is about the table's shape, not the search
        "search": {"cv": 2, "repeats": 1}, "evaluation": {"plots": False},
        "tracking": {"uri": store, "registered_model": f"shape-{shape}"},
    })
    result = run(job, client)
    assert result.dataset.manifest.rows_kept == len(frame)
    assert result.test.metrics["roc_auc"] > 0.6
    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(f"models:/shape-{shape}@champion")
    raw = pd.read_csv(src, keep_default_na=False, dtype={c: str for c in job.table.categorical}).head(30)
    out = model.predict(raw[job.table.features])
    assert out["probability"].between(0, 1).all() and len(out) == 30
    if shape == "high_cardinality":  # rare levels were grouped: few one-hot columns, not ~300
        lr = result.families["logistic_regression"].best_estimator
        assert len(lr.named_steps["encode"].get_feature_names_out()) < 60
