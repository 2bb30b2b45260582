"""A monitoring run in MLflow, linked to the model version it checked; and the history of the
label-free performance estimates those runs logged, read back for the report."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow

from churn.config import MonitorSpec
from churn.monitoring.batch import BatchProfile
from churn.monitoring.drift import DriftResult
from churn.monitoring.estimate import METRICS, EstimateRecord, Interval, PerformanceEstimate
from churn.tracking.store import ensure_experiment

MONITOR_KIND = "monitor"


def estimate_metrics(est: PerformanceEstimate) -> dict[str, float]:
    """The run metrics of an estimate: ``estimated_<m>`` with ``_low``/``_high``, ``realised_<m>``
    and ``estimated_labelled_<m>`` (the estimate on the labelled rows only) when there are labels."""
    out: dict[str, float] = {"estimate_rows": est.rows, "estimate_contacted": est.contacted,
                             "estimate_threshold": est.threshold, "labelled_rows": est.labelled_rows}
    for k, v in est.estimate.items():
        out.update({f"estimated_{k}": v.value, f"estimated_{k}_low": v.low, f"estimated_{k}_high": v.high})
    for k, v in est.labelled_estimate.items():
        out.update({f"estimated_labelled_{k}": v.value, f"estimated_labelled_{k}_low": v.low,
                    f"estimated_labelled_{k}_high": v.high})
    out.update({f"realised_{k}": v for k, v in est.realised.items()})
    if est.calibration is not None:
        out.update(calibration_chi2=est.calibration.chi2, calibration_p_value=est.calibration.p_value,
                   calibration_max_gap=max((abs(d.gap) for d in est.calibration.deciles), default=0.0))
    return out


def log_monitoring(spec: MonitorSpec, drift: DriftResult, batch: BatchProfile, folder: Path,
                   name: str | None, version: str | None, seconds: float,
                   estimate: PerformanceEstimate | None = None) -> str:
    """One run per check: drift, performance and estimate metrics, the report, drift.json and
    estimate.json; the model version gets a tag pointing at the run. Returns the run id."""
    exp_id = ensure_experiment(mlflow.get_tracking_uri(), spec.tracking.experiment)
    started = time.strftime("%Y-%m-%d %H:%M:%S")  # run names that tell runs apart, as a train run's
    with mlflow.start_run(experiment_id=exp_id, run_name=f"monitor: {spec.name} {started}") as run:
        mlflow.set_tags({"churn.kind": MONITOR_KIND, "model_uri": spec.model_uri, "model_name": name or "",
                         "model_version": version or "", "alerts": len(drift.alerts),
                         "drifted_features": ",".join(drift.drifted), "not_compared": drift.note or ""})
        if estimate is not None:
            mlflow.set_tags({"batch_fingerprint": estimate.fingerprint, "estimate_trust": estimate.trust,
                             "batch_source": spec.data.source[:250]})
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
        if estimate is not None:
            metrics.update(estimate_metrics(estimate))
        mlflow.log_metrics({k.replace(" ", "_"): float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(folder), "monitoring")
    if name and version:
        mlflow.MlflowClient().set_model_version_tag(name, version, "last_monitor_run", run.info.run_id)
    return run.info.run_id


def estimate_history(experiment: str, model_name: str | None, limit: int = 200) -> list[EstimateRecord]:
    """The estimates the monitor logged for ``model_name`` in ``experiment`` (any version), oldest
    first, at most the last ``limit`` runs; runs from before the estimate existed are skipped. A model
    without a registered name (a local folder) has no history: it could not be told from another."""
    exp = mlflow.get_experiment_by_name(experiment)
    if exp is None:
        return []
    if not model_name:  # a model not from the registry: no name to follow it by
        return []
    by_name = "" if "'" in model_name else f" and tags.model_name = '{model_name}'"  # else compared below
    runs = mlflow.search_runs([exp.experiment_id], output_format="list", max_results=limit,
                              filter_string=f"tags.`churn.kind` = '{MONITOR_KIND}'{by_name}",
                              order_by=["attributes.start_time DESC"])
    out = []
    for run in reversed(runs):
        m, tags = run.data.metrics, run.data.tags
        if "estimated_roc_auc" not in m or "batch_fingerprint" not in tags or tags.get("model_name") != model_name:
            continue
        est = {k: Interval(m[f"estimated_{k}"], m[f"estimated_{k}_low"], m[f"estimated_{k}_high"])
               for k in METRICS if f"estimated_{k}" in m}
        real = {k: m[f"realised_{k}"] for k in METRICS if f"realised_{k}" in m}
        out.append(EstimateRecord(run.info.run_id, run.info.start_time / 1000, tags.get("batch_source", ""),
                                  tags.get("model_version", ""), tags["batch_fingerprint"],
                                  tags.get("estimate_trust", ""), int(m.get("estimate_rows", 0)),
                                  int(m.get("labelled_rows", 0)), est, real))
    return out
