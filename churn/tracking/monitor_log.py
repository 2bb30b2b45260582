"""A monitoring run in MLflow, linked to the model version it checked."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow

from churn.config import MonitorSpec
from churn.monitoring.batch import BatchProfile
from churn.monitoring.drift import DriftResult
from churn.tracking.store import ensure_experiment


def log_monitoring(spec: MonitorSpec, drift: DriftResult, batch: BatchProfile, folder: Path,
                   name: str | None, version: str | None, seconds: float) -> str:
    """One run per check: drift and performance metrics, the report and drift.json; the model
    version gets a tag pointing at the run. Returns the run id."""
    exp_id = ensure_experiment(mlflow.get_tracking_uri(), spec.tracking.experiment)
    started = time.strftime("%Y-%m-%d %H:%M:%S")  # run names that tell runs apart, as a train run's
    with mlflow.start_run(experiment_id=exp_id, run_name=f"monitor: {spec.name} {started}") as run:
        mlflow.set_tags({"churn.kind": "monitor", "model_uri": spec.model_uri, "model_name": name or "",
                         "model_version": version or "", "alerts": len(drift.alerts),
                         "drifted_features": ",".join(drift.drifted), "not_compared": drift.note or ""})
        mlflow.log_params({"source": spec.data.source[:500],
                           **{f"threshold_{k}": v for k, v in spec.thresholds.model_dump().items()}})
        metrics = {"rows_read": batch.rows_read, "rows_profiled": batch.rows_profiled,
                   "rows_quarantined": batch.rows_quarantined, "alerts": len(drift.alerts), "seconds": seconds,
                   **{f"psi_{f.feature}": f.psi for f in drift.features},
                   **{f"quarantined_{k.replace(':', '_')}": n for k, n in drift.quarantined.items()}}
        if drift.prediction is not None:
            metrics.update(prediction_psi=drift.prediction.psi, prediction_ks=drift.prediction.statistic)
        metrics.update({f"batch_{k}": v["batch"] for k, v in drift.performance.items()})
        metrics.update({f"reference_{k}": v["reference"] for k, v in drift.performance.items()})
        mlflow.log_metrics({k.replace(" ", "_"): float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(folder), "monitoring")
    if name and version:
        mlflow.MlflowClient().set_model_version_tag(name, version, "last_monitor_run", run.info.run_id)
    return run.info.run_id
