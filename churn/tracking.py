"""MLflow tracking: where the store is, and the model flavour that is registered.

With no tracking URI configured (job spec or ``MLFLOW_TRACKING_URI``), runs go to an
embedded store in the current directory: a SQLite file plus a local artifact folder.
"""

from __future__ import annotations

import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import skops.io as sio
from mlflow.pyfunc import PythonModel

from churn._defaults import setting
from churn.config import TrackingSpec

log = logging.getLogger(__name__)


class TrackingError(RuntimeError):
    """The tracking store cannot be used."""


def resolve_uri(spec: TrackingSpec) -> str:
    """Job spec URI, else ``MLFLOW_TRACKING_URI``, else a SQLite store in the current directory."""
    if spec.uri:
        return spec.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return "sqlite:///" + str(Path(setting("tracking.default-store", "mlflow.db")).resolve())


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, with the URI in the message, when a tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured URI
            if resp.status != 200:
                raise TrackingError(f"MLflow tracking server at {uri} answered {resp.status} on /health")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise TrackingError(f"cannot reach MLflow tracking server at {uri}: {exc}") from None


def ensure_experiment(uri: str, name: str) -> str:
    """Point mlflow at ``uri`` and return the experiment id, creating it when needed."""
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root(uri)
    return mlflow.create_experiment(name, artifact_location=location.as_uri() if location else None)


def artifact_root(uri: str) -> Path | None:
    """For a SQLite store: the artifact folder beside the database file; else None."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()  # sqlite:////abs and sqlite:///rel alike
    return db.parent / setting("tracking.default-artifacts", "mlruns")


def ui_hint(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    root = artifact_root(uri)
    if root is None:
        return f"open {uri} in a browser" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}"
    return (f".venv/bin/mlflow ui --backend-store-uri {uri} --default-artifact-root {root} "
            "--host 127.0.0.1 --port 5000")


# --------------------------------------------------------------------------- the model
def trusted_types() -> list[str]:
    """Types skops may load beyond its defaults: the explicit list from churn.yaml + ours."""
    own = ["churn.features.TableCoercer", "churn.features.CorrelationFilter", "churn.features.ImportanceSelector"]
    return list(setting("search.skops-trusted-types", [])) + own


def dump_pipeline(pipeline: Any, path: str) -> None:
    """Save with skops and refuse if the file would need a type outside the trusted list."""
    sio.dump(pipeline, path)
    try:  # loading with the explicit list is the check that counts (it audits every node)
        sio.load(path, trusted=trusted_types())
    except sio.exceptions.UntrustedTypesFoundException as exc:
        raise TrackingError("the fitted pipeline holds types not on the skops trusted list "
                            f"(churn.search.skops-trusted-types): {exc}") from None


class ChurnModel(PythonModel):
    """pyfunc model: rows in, churn ``probability`` and 0/1 ``decision`` out.

    The fitted pipeline is a skops artifact; the decision threshold is model config.
    """

    def __init__(self) -> None:
        self.pipeline: Any = None
        self.threshold = 0.5

    def load_context(self, context: Any) -> None:
        self.pipeline = sio.load(context.artifacts["pipeline"], trusted=trusted_types())
        self.threshold = float((context.model_config or {}).get("threshold", 0.5))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        proba = self.pipeline.predict_proba(model_input)[:, 1]
        return pd.DataFrame({"probability": proba, "decision": (proba >= self.threshold).astype(np.int64)})


def log_model(pipeline: Any, example: pd.DataFrame, threshold: float, registered_name: str) -> Any:
    """Log the fitted pipeline as a pyfunc model with signature and example; register it."""
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "pipeline.skops")
        dump_pipeline(pipeline, path)
        proba = pipeline.predict_proba(example)[:, 1]
        output = pd.DataFrame({"probability": proba, "decision": (proba >= threshold).astype(np.int64)})
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*integer column.*")
            signature = infer_signature(example, output)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=os.path.join(os.path.dirname(__file__), "serving_model.py"),
            model_config={"threshold": float(threshold)},
            artifacts={"pipeline": path},
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
            pip_requirements=_requirements(),
        )


def _requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["scikit-learn", "imbalanced-learn", "skops", "pandas", "numpy", "mlflow"]
    return [f"{p}=={version(p)}" for p in pkgs]


def set_alias(name: str, alias: str, version: str | int) -> None:
    mlflow.MlflowClient().set_registered_model_alias(name, alias, str(version))
