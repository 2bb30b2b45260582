"""The registered model: raw rows in, churn ``probability`` and 0/1 ``decision`` out.

An MLflow pyfunc ``PythonModel``; the fitted pipeline is a skops artifact loaded with the
fixed trusted-type list, the table's rules are the ``rules.json`` artifact, the decision threshold
is model config.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import AnyType, ColSpec, Schema

from churn.serving.predict import predict_frame
from churn.serving.rules import rule_breaks
from churn.serving.trusted import load_pipeline

MAX_REASONS = 10  # reason codes one request may ask for


def requested_reasons(params: dict[str, Any] | None) -> int:
    """The reason codes a request asks for (its ``reasons`` parameter, 0 without one); a value
    that is not a whole number from 0 to :data:`MAX_REASONS` is refused."""
    value = (params or {}).get("reasons", 0)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_REASONS:
        raise MlflowException(f"reasons must be a whole number from 0 to {MAX_REASONS}, not {value!r}",
                              error_code=INVALID_PARAMETER_VALUE)
    return int(value)


def untyped(inputs: Schema, columns: Iterable[str]) -> Schema:
    """``inputs`` with ``columns`` of any type, so MLflow passes their values on as sent.

    MLflow's typed columns cast silently before the model sees a row: ``long`` turns ``1.9``
    into 1, ``-0.5`` into 0 and ``true`` into 1; ``double`` turns ``true`` into 1.0 and the text
    ``"nan"`` into a blank. Untyped, the table's rules (:func:`churn.serving.rules.rule_breaks`)
    see the values themselves.
    """
    raw = set(columns)
    return Schema([ColSpec(AnyType(), c.name, required=c.required) if c.name in raw else c for c in inputs.inputs])


class ChurnModel(PythonModel):
    """pyfunc model: rows in, churn ``probability`` and 0/1 ``decision`` out."""

    def __init__(self) -> None:
        self.pipeline: Any = None
        self.threshold = 0.5
        self.rules: dict[str, Any] = {}
        self.reference_profile: str | None = None  # path of the training profile (for monitoring)

    def load_context(self, context: Any) -> None:
        self.pipeline = load_pipeline(context.artifacts["pipeline"])
        self.reference_profile = context.artifacts.get("reference_profile")
        config = context.model_config or {}
        self.threshold = float(config.get("threshold", 0.5))
        rules = context.artifacts.get("rules")  # rules.json; versions logged before it carry them in the config
        self.rules = json.loads(Path(rules).read_text()) if rules else config.get("rules", {})

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Scores for rows that pass the table's rules; any row ingest would quarantine makes the
        whole request an error naming it (HTTP 400 from MLflow's scoring server, whose JSON body
        carries the problems as ``problems``: row, column, value, rule). ``params={"reasons": k}``
        adds ``k`` reason codes per row."""
        reasons = requested_reasons(params)
        problems = rule_breaks(model_input, self.rules)
        if problems:
            raise MlflowException("rows break the table's rules: " + "; ".join(map(str, problems)),
                                  error_code=INVALID_PARAMETER_VALUE, problems=[p.as_json() for p in problems])
        return predict_frame(self.pipeline, model_input, self.threshold, reasons)
