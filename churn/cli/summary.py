"""What the commands print when they finish: rich tables built from the jobs' typed results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from churn.config import JobSpec
from churn.config.families import imbalance_used

if TYPE_CHECKING:
    from churn.config import ScoreSpec
    from churn.data.ingest import Dataset
    from churn.jobs.train import TrainResult
    from churn.modeling.batch import ScoreResult


def ingest_table(spec: JobSpec, ds: Dataset) -> Table:
    man = ds.manifest
    table = Table(title=f"churn ingest: {spec.name}", show_header=False)
    rows = [("dataset", f"{ds.root}{' (reused)' if ds.reused else ''}"),
            ("files / bytes", f"{len(man.files)} / {man.total_bytes:,}"),
            ("partitions", f"{man.partitions}"),
            ("rows read", f"{man.rows_read:,}"),
            ("rows kept", f"{man.rows_kept:,}"),
            ("rows quarantined", f"{man.rows_quarantined:,}"),
            ("duplicates removed", f"{man.duplicates_removed:,}")]
    rows += [(f"  quarantined: {k}", f"{v:,}") for k, v in man.quarantined_by_reason.items()]
    rows.append(("seconds", f"{man.seconds:.1f}"))
    for k, v in rows:
        table.add_row(k, v)
    return table


def search_table(spec: JobSpec, result: TrainResult) -> Table:
    fams = Table(title=f"churn train: {spec.name} — search ({spec.search.engine}, {spec.search.strategy})")
    for col in ("family", "imbalance", "candidates", "fits", f"CV {spec.search.scoring}", "seconds", "best params"):
        fams.add_column(col, overflow="fold")
    for fam, res in result.families.items():
        mark = " (champion)" if fam == result.champion else ""
        fams.add_row(fam + mark, imbalance_used(fam, spec.model.imbalance), str(res.n_candidates), str(res.n_fits),
                     f"{res.best_score:.4f}", f"{res.seconds:.1f}",
                     ", ".join(f"{k.removeprefix('model__')}={v}" for k, v in res.best_params.items()))
    return fams


def result_table(spec: JobSpec, result: TrainResult, wall: float) -> Table:
    table = Table(title="data, champion and test split", show_header=False)
    m = result.test.metrics
    man = result.dataset.manifest
    econ = spec.evaluation.economics
    for key, value in [
        ("rows read / kept / quarantined / duplicates",
         f"{man.rows_read:,} / {man.rows_kept:,} / {man.rows_quarantined:,} / {man.duplicates_removed:,}"),
        ("train rows (search rows) / test rows",
         f"{result.rows['train']:,} ({result.rows['search']:,}) / {result.rows['test']:,}"),
        ("test ROC AUC / PR AUC / Brier / log loss",
         f"{m['roc_auc']:.4f} / {m['pr_auc']:.4f} / {m['brier']:.4f} / {m['log_loss']:.4f}"),
        ("precision at top 10 %", f"{m.get('precision_at_10pct', float('nan')):.3f}"),
        ("decision threshold (profit) / F1 threshold",
         f"{result.threshold.value:.3f} (from {result.threshold.source}) / {result.threshold.f1:.3f}"),
        ("campaign at threshold", f"contact {m['contacted_fraction']:.1%} of customers, expected profit "
         f"{m.get('profit', 0):,.0f} vs {m.get('profit_contact_all', 0):,.0f} contacting all "
         f"(value {econ.customer_value:g}, offer {econ.offer_cost:g}, contact {econ.contact_cost:g}, "
         f"acceptance {econ.acceptance_rate:g})"),
        ("features kept by the champion", f"{len(result.kept_features)}"),
        ("registered model", f"{result.model_uri} (version {result.model_version})"),
        ("MLflow run", result.run_id),
        ("wall time", f"{wall:.1f}s"),
    ]:
        table.add_row(key, value)
    return table


def score_table(spec: ScoreSpec, res: ScoreResult) -> Table:
    table = Table(title=f"churn score: {spec.name} with {spec.model_uri}", show_header=False)
    for k, v in [("scores", str(res.root)), ("rows read", f"{res.rows_read:,}"),
                 ("rows scored", f"{res.rows_scored:,}"), ("rows quarantined", f"{res.rows_quarantined:,}"),
                 *[(f"  quarantined: {k}", f"{v:,}") for k, v in res.reasons.items()],
                 ("seconds", f"{res.seconds:.1f}")]:
        table.add_row(k, v)
    return table
