"""The monitor job: a new batch against the model version's training profile. Wiring only.

Rows are checked with the rules logged with the model (:mod:`churn.tracking.model_rules`); the
rows they quarantine count as drift by reason and column; more than ``data.max_bad_fraction``
of them fail the job; a batch with too few clean rows gets a note, not a drift verdict. The same
pass gives the performance estimated without labels (:mod:`churn.monitoring.estimate`), checked
against whatever rows carry a label, and the report shows it beside the estimates and realised
figures of the monitor's earlier runs of the model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow
from distributed import Client

from churn.clusters.info import workers as cluster_workers
from churn.config import ConfigError, MonitorSpec
from churn.config.settings import setting
from churn.data.budget import check_bad_rows
from churn.data.folders import run_folder_name, unwritable_reason
from churn.data.ingest import balanced_blocksize, check_headers, scan_blocks
from churn.monitoring import estimate as cbpe
from churn.monitoring.batch import BatchProfile, profile_batch
from churn.monitoring.drift import DriftResult, Thresholds, compare, performance
from churn.monitoring.report import render
from churn.tracking.model_rules import logged_rules, with_model_table
from churn.tracking.monitor_log import estimate_history, log_monitoring
from churn.tracking.names import check_experiment, check_names
from churn.tracking.registry import load_churn_model
from churn.tracking.store import check_store, resolve_uri

log = logging.getLogger(__name__)


@dataclass
class MonitorResult:
    drift: DriftResult
    batch: BatchProfile
    report: Path
    run_id: str
    model: str
    seconds: float
    estimate: cbpe.PerformanceEstimate | None = None  # None when the batch was not compared (too few rows)


def preflight(spec: MonitorSpec) -> str:
    """Source files, the report folder, the tracking store, the job's schema against the model's
    rules (read from its MLmodel file: none of its code runs) and the headers (label optional)."""
    paths = spec.data.paths()
    reason = unwritable_reason(Path(spec.report))
    if reason:
        raise ConfigError(f"report: cannot write to {spec.report}: {reason}")
    uri = resolve_uri(spec.tracking)
    check_store(uri)
    check_names(spec.tracking, registry=False)
    check_experiment(uri, spec.tracking.experiment)
    mlflow.set_tracking_uri(uri)
    spec = with_model_table(spec, logged_rules(spec.model_uri))
    check_headers(paths, spec.table, spec.data.encoding, require_label=False)
    return uri


def run(spec: MonitorSpec, client: Client) -> MonitorResult:
    """Profile the batch on the cluster, compare it with the reference, write the report, log the run."""
    t0 = time.perf_counter()
    mlflow.set_tracking_uri(resolve_uri(spec.tracking))
    model = load_churn_model(spec.model_uri)
    spec = with_model_table(spec, model.rules)
    reference = model.reference()
    paths = spec.data.paths()
    headers = check_headers(paths, spec.table, spec.data.encoding, require_label=False)
    _, blocks = scan_blocks(paths, headers, balanced_blocksize(spec, paths, len(cluster_workers(client))),
                            client)
    batch = profile_batch(blocks, spec.table, spec.data.encoding, model.pipeline, reference, client,
                          model.threshold)
    check_bad_rows("monitor", batch.rows_read, batch.rows_quarantined, batch.reasons, spec.data.max_bad_fraction)
    drift = compare(reference, batch.profile, Thresholds(**spec.thresholds.model_dump()), rows_read=batch.rows_read,
                    quarantined=batch.by_column, min_rows=int(setting("monitor.min-rows")))
    if drift.note:
        log.warning("monitor: %s; no drift verdict", drift.note)
    estimate, history, reference_auc = None, [], _reference_auc(reference)
    if not drift.note and batch.estimate is not None:
        estimate = cbpe.assess(batch.estimate, spec.thresholds.calibration_gap)
        drift.alerts += cbpe.alerts(estimate, reference_auc, spec.thresholds.roc_auc_drop)
        history = [*estimate_history(spec.tracking.experiment, model.name),
                   cbpe.record_of(estimate, "", time.time(), spec.data.source, model.version or "")]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    label = f"{model.name or 'model'} v{model.version or '-'}"
    folder = Path(spec.report) / run_folder_name(spec.name)
    folder.mkdir(parents=True)  # a new name per run: never another run's report
    report = folder / "report.html"
    report.write_text(render(drift, f"churn monitor: {spec.name}", f"{spec.model_uri} ({label})",
                             spec.data.source, created, spec.thresholds.quarantined, estimate, history,
                             reference_auc))
    (folder / "drift.json").write_text(json.dumps(asdict(drift), indent=2, default=float))
    if estimate is not None:
        (folder / "estimate.json").write_text(json.dumps(asdict(estimate) | {"trust": estimate.trust}, indent=2,
                                                         default=float))
    seconds = time.perf_counter() - t0
    run_id = log_monitoring(spec, drift, batch, folder, model.name, model.version, seconds, estimate)
    log.info("monitor: %d rows profiled, %d quarantined, %d alert(s); report %s", batch.rows_profiled,
             batch.rows_quarantined, len(drift.alerts), report)
    return MonitorResult(drift, batch, report, run_id, label, seconds, estimate)


def _reference_auc(reference: dict) -> float | None:
    """The training rows' out-of-fold ROC AUC, from the reference profile (None without labels)."""
    labelled = reference.get("labelled")
    return performance(labelled)["roc_auc"] if labelled and labelled["rows"] else None
