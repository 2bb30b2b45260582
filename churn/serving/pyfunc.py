"""The registered model: raw rows in, churn ``probability`` and 0/1 ``decision`` out.

An MLflow pyfunc ``PythonModel``; the fitted pipeline is a skops artifact loaded with the
fixed trusted-type list, the decision threshold is model config.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from churn.serving.trusted import load_pipeline


def predict_frame(pipeline: Any, rows: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The model's output for ``rows``: probability of churn and the decision at ``threshold``."""
    proba = pipeline.predict_proba(rows)[:, 1]
    return pd.DataFrame({"probability": proba, "decision": (proba >= threshold).astype(np.int64)})


class ChurnModel(PythonModel):
    """pyfunc model: rows in, churn ``probability`` and 0/1 ``decision`` out."""

    def __init__(self) -> None:
        self.pipeline: Any = None
        self.threshold = 0.5

    def load_context(self, context: Any) -> None:
        self.pipeline = load_pipeline(context.artifacts["pipeline"])
        self.threshold = float((context.model_config or {}).get("threshold", 0.5))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predict_frame(self.pipeline, model_input, self.threshold)
