"""The score job: a registered model scores CSV data on the cluster. Wiring only."""

from __future__ import annotations

from pathlib import Path

import mlflow
from distributed import Client

from churn.config import ScoreSpec
from churn.data.ingest import check_headers, check_output_folder
from churn.data.publish import remove_abandoned
from churn.modeling.batch import ModelRef, ScoreResult, score
from churn.tracking.registry import load_churn_model
from churn.tracking.store import check_store, resolve_uri


def preflight(spec: ScoreSpec) -> str:
    """Source files and headers (label optional), output folder and tracking store; returns the URI."""
    check_headers(spec.data.paths(), spec.table, spec.data.encoding, require_label=False)
    check_output_folder(spec)
    uri = resolve_uri(spec.tracking)
    check_store(uri)
    return uri


def run(spec: ScoreSpec, client: Client) -> ScoreResult:
    """Load the model once in the driver, then score every block on the workers."""
    remove_abandoned(Path(spec.data.output))  # .staging-scores-* folders of killed score drivers, as ingest does
    mlflow.set_tracking_uri(resolve_uri(spec.tracking))
    model = load_churn_model(spec.model_uri)
    return score(spec, client, model.pipeline, ModelRef(spec.model_uri, model.name, model.version, model.threshold))
