"""What the commands print when they finish: rich tables built from the jobs' typed results."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from churn.config import JobSpec
from churn.config.families import spelled
from churn.modeling.calibrate import MIN_GAIN, STACK

if TYPE_CHECKING:
    from churn.config import MonitorSpec, ScoreSpec
    from churn.data.ingest import Dataset
    from churn.jobs.monitor import MonitorResult
    from churn.jobs.train import TrainResult
    from churn.modeling.batch import ScoreResult
    from churn.tracking.run_state import RunStatus


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


def stack_description(result: TrainResult) -> str:
    """What the stacked candidate was: its members, or why it stayed the best family alone."""
    if result.champion.name == STACK:
        return "logistic regression over the out-of-fold scores of " + ", ".join(result.champion.members)
    return (f"best pair tried; no second family raised the best family's CV score by {MIN_GAIN} and by one "
            "standard error of its fold-wise gains")


def search_table(spec: JobSpec, result: TrainResult) -> Table:
    fams = Table(title=f"churn train: {spec.name} — search ({spec.search.engine}, {spec.search.strategy}; "
                       f"imbalance searched: {', '.join(spec.model.imbalance)})")
    champ = result.champion
    repeated = champ.repeats > 1  # the champion was chosen on the search's folds and fresh ones
    cv_col = f"CV {spec.search.scoring} ± std" + (f" / {champ.repeats} repeats" if repeated else "")
    for col in ("family", "imbalance", "rows per fit", "fits / candidates", cv_col, "done at s", "best params"):
        # the last columns wrap, so the parameters keep room on a 140-column terminal
        fams.add_column(col, overflow="fold", no_wrap=col in ("family", "imbalance", "rows per fit"))
    for fam, res in result.families.items():
        mark = " (champion)" if fam == champ.name else " (in stack)" if fam in champ.members else ""
        rows = f"{res.rows_per_fit:,}" + (f" of {result.rows['search']:,}" if res.rows_per_fit < result.rows["search"]
                                          else "")
        over = f" / {champ.family_scores.get(fam, float('nan')):.4f}" if repeated else ""
        fams.add_row(fam + mark, res.imbalance, rows, f"{res.n_fits} / {res.n_candidates}",
                     f"{res.best_score:.4f} ± {res.std_score:.4f}{over}",
                     f"{res.seconds:.1f}",
                     ", ".join(f"{spelled(k)}={v}" for k, v in res.best_params.items()
                               if k != "resample__method" and k != "model__class_weight"))
    if champ.stack_score is not None:
        mark = " (champion)" if champ.name == STACK else ""
        score = f"{champ.stack_score:.4f} ± {champ.stack_std:.4f}"
        fams.add_row(STACK + mark, "-", f"{result.rows['search']:,}", "-", f"- / {score}" if repeated else score,
                     "-", stack_description(result))
    return fams


def result_table(spec: JobSpec, result: TrainResult, wall: float) -> Table:
    table = Table(title="data, champion and test split", show_header=False)
    m = result.test.metrics
    man = result.dataset.manifest
    econ = spec.evaluation.economics
    for key, value in [
        ("rows read / kept / quarantined / duplicates",
         f"{man.rows_read:,} / {man.rows_kept:,} / {man.rows_quarantined:,} / {man.duplicates_removed:,}"),
        ("train rows (search rows) / validation rows / test rows",
         f"{result.rows['train']:,} ({result.rows['search']:,}) / {result.rows.get('validation', 0):,} "
         f"(split.validation {spec.split.validation}: {result.validation:.1%}) / {result.rows['test']:,}"),
        *[(f"fewer rows: {what}", note) for what, note in result.row_notes.items()],
        *([("full-data model vs sample champion", result.full_data.line)] if result.full_data else []),
        (f"champion / calibration{' (CV over repeats)' if result.champion.repeats > 1 else ''}",
         f"{result.champion.name} (CV {spec.search.scoring} "
         f"{result.champion.cv_score:.4f} ± {result.champion.cv_std:.4f}) / {result.champion.calibration.method} "
         f"(out-of-fold Brier {', '.join(f'{k} {v:.4f}' for k, v in result.champion.calibration.brier.items())})"),
        ("test ROC AUC / PR AUC / Brier / log loss",
         f"{m['roc_auc']:.4f} / {m['pr_auc']:.4f} / {m['brier']:.4f} / {m['log_loss']:.4f} "
         f"({'the full-data model' if _full_won(result) else 'model before finalising'})"),
        ("precision at top 10 %", f"{m.get('precision_at_10pct', float('nan')):.3f}"),
        ("decision threshold (profit) / F1 threshold",
         f"{result.threshold.value:.3f} (from {result.threshold.source}) / {result.threshold.f1:.3f}"),
        ("campaign at threshold", f"contact {m['contacted_fraction']:.1%} of customers, expected profit "
         f"{m.get('profit', 0):,.0f} vs {m.get('profit_contact_all', 0):,.0f} contacting all "
         f"(value {econ.customer_value:g}, offer {econ.offer_cost:g}, contact {econ.contact_cost:g}, "
         f"acceptance {econ.acceptance_rate:g})"),
        ("features kept by the champion", f"{len(result.kept_features)}"),
        ("feature sums (model.feature_sums)", ", ".join(result.feature_sums) or "none"),
        ("registered model", f"{result.model_uri} (version {result.model_version}), fitted on "
         f"{result.rows['final']:,} rows ({_learned_from(result)})"),
        ("promotion", result.promotion.line if result.promotion else "-"),
        ("MLflow run", result.run_id),
        ("wall time", f"{wall:.1f}s"),
    ]:
        table.add_row(key, value)
    return table


def _full_won(result: TrainResult) -> bool:
    return result.full_data is not None and result.full_data.winner == "full-data"


def _learned_from(result: TrainResult) -> str:
    """Which rows the registered model learned from."""
    rows = result.rows
    if _full_won(result):
        return "every train row: the full-data xgboost model"
    if "finalize" not in result.row_notes and rows["final"] > rows["search"]:
        return "train + test"
    if rows["search"] < rows["train"]:
        return f"the search sample: {rows['search']:,} of {rows['train']:,} train rows"
    return "the train rows"


def score_table(spec: ScoreSpec, res: ScoreResult) -> Table:
    table = Table(title=f"churn score: {spec.name} with {spec.model_uri}", show_header=False)
    for k, v in [("scores", str(res.root)), ("rows read", f"{res.rows_read:,}"),
                 ("rows scored", f"{res.rows_scored:,}"), ("rows quarantined", f"{res.rows_quarantined:,}"),
                 *[(f"  quarantined: {k}", f"{v:,}") for k, v in res.reasons.items()],
                 ("seconds", f"{res.seconds:.1f}")]:
        table.add_row(k, v)
    return table


def monitor_table(spec: MonitorSpec, res: MonitorResult) -> Table:
    d = res.drift
    table = Table(title=f"churn monitor: {spec.name} with {spec.model_uri} ({res.model})", show_header=False)
    rows = [("rows read / profiled / quarantined",
             f"{res.batch.rows_read:,} / {res.batch.rows_profiled:,} / {res.batch.rows_quarantined:,}"),
            *[(f"  quarantined: {k}", f"{v:,}") for k, v in sorted(d.quarantined.items(), key=lambda kv: -kv[1])]]
    if d.note:  # no drift verdict
        rows.append(("not compared with the reference", d.note))
    else:
        rows += [("drifted features (PSI >= " + f"{spec.thresholds.psi})", ", ".join(
                    f"{f.feature} ({f.psi:.2f})" for f in d.features if f.flagged) or "none"),
                 ("largest PSI", ", ".join(f"{f.feature} {f.psi:.3f}"
                                           for f in sorted(d.features, key=lambda f: -f.psi)[:3]))]
    if d.prediction is not None:
        rows.append(("prediction drift (score PSI / KS)", f"{d.prediction.psi:.3f} / {d.prediction.statistic:.3f}"))
    for k in ("roc_auc", "pr_auc", "brier"):
        if k in d.performance:
            v = d.performance[k]
            rows.append((f"{k} batch (reference)", f"{v['batch']:.4f} ({v['reference']:.4f})"))
    rows += [("alerts", "; ".join(d.alerts) or "none"), ("report", str(res.report)), ("MLflow run", res.run_id),
             ("seconds", f"{res.seconds:.1f}")]
    for k, v in rows:
        table.add_row(k, v)
    return table


def status_table(st: RunStatus) -> Table:
    """A run's state for ``churn status``: MLflow status, stage, times, error, headline metrics."""
    import time

    table = Table(title=f"churn run {st.run_id} ({st.name})", show_header=False)
    end = st.ended or time.time()
    rows = [("status", st.status), ("stage", st.stage or "-"),
            ("started", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(st.started)) if st.started else "-"),
            ("running for" if not st.done else "took", f"{end - st.started:.0f} s" if st.started else "-")]
    if st.heartbeat is not None and not st.done:
        rows.append(("last heartbeat", f"{time.time() - st.heartbeat:.0f} s ago"))
    if st.error:
        rows.append(("error", st.error))
    rows += [(k, f"{st.metrics[k]:.4f}") for k in sorted(st.metrics)
             if k.startswith(("cv_", "test_roc_auc", "test_pr_auc", "test_brier"))]
    for k, v in rows:
        table.add_row(k, v)
    return table
