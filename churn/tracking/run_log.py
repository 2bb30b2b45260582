"""The layout of a train run in MLflow.

One parent run per job in the job's experiment, named after the job and the time it started
(``telco-churn 2026-12-02 10:41:07``), opened when the job starts (so a failure or a SIGTERM
leaves it FAILED) and tagged with the stage it is in; while the job runs, its driver beats
(:mod:`churn.tracking.run_state`), so that a driver killed without a word is found and its run
marked FAILED later. The table's rules are one artifact, ``data/rules.json``. One child run per
model family, in the same experiment, with its best parameters and ``cv_results_``; the
champion's parameters, metrics, report, plots and the registered model on the parent. Parameter
names read as the job spells them (``logistic_regression.numeric_basis``,
:func:`churn.config.families.readable`). Each registered version gets a description and tags
saying what it is (:func:`version_card`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

from churn.config import JobSpec
from churn.config.families import imbalance_used, readable
from churn.data.manifest import Manifest
from churn.modeling.calibrate import STACK, Champion
from churn.modeling.evaluate import Evaluation, Threshold
from churn.modeling.screen import SumsChoice
from churn.modeling.search import SearchResult
from churn.modeling.summary import ScoreSummary
from churn.tracking import plots
from churn.tracking.registry import serving_rules
from churn.tracking.run_state import ERROR_TAG, STAGE_TAG, SUBMITTED, fail_lost_runs, heartbeat
from churn.tracking.store import ensure_experiment, error_line

log = logging.getLogger(__name__)


def run_name(job: JobSpec) -> str:
    """The parent run's name: the job's name and the local time it starts, to tell runs apart."""
    return f"{job.name} {time.strftime('%Y-%m-%d %H:%M:%S')}"


def create_run(uri: str, job: JobSpec, job_file: str | None) -> str:
    """A run for a job that a driver elsewhere will resume (``churn submit``); its id."""
    exp_id = ensure_experiment(uri, job.tracking.experiment)
    client = mlflow.MlflowClient(uri)
    run = client.create_run(exp_id, run_name=run_name(job), tags={STAGE_TAG: SUBMITTED})
    if job_file:  # beside the effective spec (job/job.yaml, with the --set values), never over it
        client.log_artifact(run.info.run_id, job_file, "job/file")
    return run.info.run_id


@contextlib.contextmanager
def parent_run(uri: str, job: JobSpec, job_file: str | None, run_id: str | None = None
               ) -> Iterator[mlflow.ActiveRun]:
    """Open the job's run, or resume ``run_id`` (made by :func:`create_run`). If the block raises
    (also on SIGTERM turned into an exception) the run ends FAILED with the error's first line in
    the ``churn.error`` tag."""
    exp_id = ensure_experiment(uri, job.tracking.experiment)
    fail_lost_runs(uri, exp_id)
    start = (mlflow.start_run(run_id=run_id) if run_id
             else mlflow.start_run(experiment_id=exp_id, run_name=run_name(job)))
    with _ended(start) as run, heartbeat(uri, run.info.run_id):
        try:
            mlflow.log_params({
                "families": ",".join(job.model.families), "imbalance": ",".join(job.model.imbalance),
                "calibration": job.model.calibration, "ensemble": job.model.ensemble, "finalize": job.model.finalize,
                "seed": job.seed, "cv": job.search.cv, "scoring": job.search.scoring, "engine": job.search.engine,
                "strategy": job.search.strategy, "test_fraction": job.split.test,
                "validation_fraction": job.split.validation,
                **{f"economics_{k}": v for k, v in job.evaluation.economics.model_dump().items()}})
            mlflow.log_dict(job.as_dict(), "job/job.yaml")  # the effective spec
            mlflow.log_dict(serving_rules(job.table), "data/rules.json")  # once, as the model carries them
            if job_file:  # as written, without the --set values; a file named job.yaml would replace the above
                mlflow.log_artifact(job_file, "job/file")
            yield run
        except BaseException as exc:
            error = f"{type(exc).__name__}: {error_line(exc)}"[:500]
            _unless_refused(lambda: mlflow.set_tag(ERROR_TAG, error), run.info.run_id)
            raise


@contextlib.contextmanager
def _ended(active: mlflow.ActiveRun) -> Iterator[mlflow.ActiveRun]:
    """Yield ``active``; end it FINISHED, or FAILED when the block raises. A store that refuses
    the FAILED mark (a full disk, a read-only database) does not replace the block's own error."""
    try:
        yield active
    except BaseException:
        _unless_refused(lambda: mlflow.end_run("FAILED"), active.info.run_id)  # end_run forgets the run first
        raise
    mlflow.end_run()


def _unless_refused(write: Callable[[], object], run_id: str) -> None:
    """``write()``, recording a failed job; a store that refuses it is a warning: the run stays
    RUNNING until its heartbeat is older than ``churn.tracking.heartbeat-timeout``, and then
    ``churn status`` or the next job marks it FAILED."""
    try:
        write()
    except Exception as exc:  # noqa: BLE001 - the job's own error is the one to report
        log.warning("run %s could not be marked FAILED: the tracking store refused the write (%s); it is marked "
                    "once its heartbeat is older than churn.tracking.heartbeat-timeout", run_id, error_line(exc))


def mark_search_reused(key: str) -> None:
    """Record that the run reused an earlier run's search (the cache key)."""
    mlflow.set_tag("churn.search_reused", key)


REPLACES_TAG = "churn.replaces_run"  # the earlier runs whose checkpointed fits this run's search restored


def mark_replaced(run_ids: list[str]) -> None:
    """Record that the run finishes the search of earlier runs whose driver stopped mid-search."""
    mlflow.set_tag(REPLACES_TAG, ",".join(run_ids))


class RunEndedError(RuntimeError):
    """The job's run was ended from outside while the job ran (e.g. marked lost)."""


def set_stage(stage: str) -> None:
    """Record the stage the run is in (read by people and by ``churn status``). A run that was
    ended from outside stops the job here, before the stage writes anything into it."""
    active = mlflow.active_run()
    if active is not None:
        run = mlflow.MlflowClient().get_run(active.info.run_id)
        if run.info.status != "RUNNING":
            reason = run.data.tags.get(ERROR_TAG, "no reason given")
            raise RunEndedError(f"run {active.info.run_id} was marked {run.info.status} while the job ran "
                                f"({reason}); stopped before stage {stage}")
    mlflow.set_tag(STAGE_TAG, stage)


def log_seconds(seconds: dict[str, float]) -> None:
    """Wall time of each stage."""
    mlflow.log_metrics({f"seconds_{k}": v for k, v in seconds.items()})


def log_feature_sums(choice: SumsChoice) -> None:
    """The sums the search used (param ``feature_sums``: their names, or ``none``) and, when CV
    chose them, the fold-mean scores with and without."""
    mlflow.log_params({"feature_sums": ",".join(choice.groups) or "none", "feature_sums_mode": choice.mode})
    if choice.gain is not None:
        mlflow.log_metrics({"feature_sums_cv_with": float(choice.with_sums.mean()),
                            "feature_sums_cv_without": float(choice.without.mean())})


def _cv_table(res: SearchResult, folder: str) -> str:
    path = Path(folder) / "cv_results.csv"
    res.cv_results.assign(params=res.cv_results["params"].astype(str)).to_csv(path, index=False)
    return str(path)


def log_family(job: JobSpec, fam: str, res: SearchResult) -> None:
    """One nested run per family, in the parent's experiment and named after it and the family:
    its best parameters (named as the job spells them), CV score and ``cv_results_``."""
    parent = mlflow.active_run()
    if parent is None:
        raise RuntimeError("log_family runs inside the job's run")
    with mlflow.start_run(run_name=f"{parent.info.run_name} / {fam}", nested=True,
                          experiment_id=parent.info.experiment_id):
        mlflow.set_tags({"family": fam, "imbalance_searched": imbalance_used(fam, job.model.imbalance),
                         "imbalance": res.imbalance})
        mlflow.log_params({readable(k): v for k, v in res.best_params.items()})
        mlflow.log_metrics({f"cv_{job.search.scoring}": res.best_score, f"cv_{job.search.scoring}_std": res.std_score,
                            "search_seconds": res.seconds,
                            "search_task_seconds": res.task_seconds, "candidates": res.n_candidates, "fits": res.n_fits,
                            "fits_restored": res.fits_restored, "rows_per_fit": res.rows_per_fit})
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifact(_cv_table(res, tmp), "search")


def log_champion(job: JobSpec, manifest: Manifest, families: dict[str, SearchResult], champion: Champion,
                 test: Evaluation, rows: dict[str, int], threshold: Threshold, kept: list[str],
                 registered: str = "search rows", calibration: str | None = None) -> None:
    """The champion's parameters and metrics, the data counts and the evaluation artifacts.

    ``test_*`` metrics are those of the model *before finalising* (fitted on the search rows, or on
    every train row by the full-data fit); ``final_rows`` says how many labelled rows the registered
    model learned from, and ``registered`` (the ``registered_model_rows`` tag) which ones;
    ``calibration`` (the ``calibration`` tag): the registered model's method, the champion's by default.
    """
    cal = champion.calibration
    mlflow.set_tags({"champion": champion.name, "champion_members": ",".join(champion.members),
                     "imbalance": ",".join(families[f].imbalance for f in champion.members),
                     "calibration": calibration or cal.method, "dataset": manifest.dataset,
                     "threshold_source": threshold.source,
                     "test_metrics_of": ("the full-data model (fitted on every train row)"
                                         if registered.startswith("every train row") else
                                         "the model before finalising (fitted on the search rows only)"),
                     "registered_model_rows": registered})
    params = {"champion": champion.name}
    for f in champion.members:
        params.update({f"{f}.{readable(k)}"[:250]: v for k, v in families[f].best_params.items()})
    mlflow.log_params(params)
    metrics = {
        f"cv_{job.search.scoring}": champion.cv_score,
        f"cv_{job.search.scoring}_std": champion.cv_std,
        "search_rows": rows["search"],
        "train_rows": rows["train"],
        "final_rows": rows["final"],
        "search_sample_fraction": rows["search"] / max(rows["train"], 1),
        "test_rows": rows["test"],
        "rows_read": manifest.rows_read,
        "rows_kept": manifest.rows_kept,
        "rows_quarantined": manifest.rows_quarantined,
        "duplicates_removed": manifest.duplicates_removed,
        "decision_threshold": threshold.value,
        "features_kept": len(kept),
        **{f"cv_{job.search.scoring}_{f}": r.best_score for f, r in families.items()},
        # what the champion was chosen on: every CV repeat (the search's folds, then fresh ones)
        "cv_repeats": champion.repeats,
        **{f"cv_{job.search.scoring}_{f}_repeats": v for f, v in champion.family_scores.items()},
        **{f"oof_brier_{m}": b for m, b in cal.brier.items()},
    }
    if champion.stack_score is not None:
        metrics[f"cv_{job.search.scoring}_{STACK}"] = champion.stack_score
    mlflow.log_metrics(metrics)
    mlflow.log_metrics({f"test_{k}": v for k, v in test.metrics.items()})
    mlflow.log_dict(manifest.to_dict(), "data/manifest.json")
    mlflow.log_dict({"features": kept}, "model/kept_features.json")
    mlflow.log_text(test.report, "evaluation/classification_report.txt")
    mlflow.log_dict({"labels": ["stay", "churn"], "threshold": threshold.value, "matrix": test.confusion},
                    "evaluation/confusion_matrix.json")
    with tempfile.TemporaryDirectory() as tmp:
        lift_path = Path(tmp) / "lift_by_decile.csv"
        test.lift.to_csv(lift_path, index=False)
        mlflow.log_artifact(str(lift_path), "evaluation")
        mlflow.log_artifact(_cv_table(families[champion.members[0]], tmp), "search")


def log_row_notes(notes: dict[str, str], rows: dict[str, int], validation: float, choice: Any,
                  test_by_model: dict[str, Evaluation] | None = None) -> None:
    """Every fit that saw fewer rows than its split holds, and why (params ``rows_<what>``: "n of N
    ..."); the validation fraction used; with a full-data fit, which model won on the validation
    split, by how much, and on how many rows each was fitted, and both models' test metrics
    (``test_<metric>_full_data``, ``test_<metric>_sample_champion``: reported, never chosen on)."""
    mlflow.log_params({"validation_fraction_used": validation,
                       **{f"rows_{k.replace('-', '_')}"[:250]: v[:6000] for k, v in notes.items()}})
    mlflow.log_metrics({"validation_rows": rows.get("validation", 0)})
    if choice is None:
        return
    mlflow.set_tags({"full_data_winner": choice.winner, "full_data_choice": choice.line[:5000]})
    mlflow.log_params({"full_data_rounds": choice.rounds, "full_data_calibration_rows": choice.calibration_rows,
                       "full_data_max_depth": choice.depth, "full_data_depth_ladder": choice.ladder[:6000] or "none",
                       "full_data_category_levels": choice.levels[:6000] or "none"})
    mlflow.log_metrics({f"validation_{choice.scoring}_full_data": choice.full_score,
                        f"validation_{choice.scoring}_sample_champion": choice.sample_score,
                        "full_data_margin": choice.margin, "full_data_rows": choice.full_rows,
                        "sample_champion_rows": choice.sample_rows, "full_data_seconds": choice.seconds})
    for name, ev in (test_by_model or {}).items():
        suffix = "full_data" if name.startswith("full") else "sample_champion"
        mlflow.log_metrics({f"test_{k}_{suffix}": ev.metrics[k] for k in ("roc_auc", "pr_auc", "brier", "log_loss")})


def version_card(job: JobSpec, manifest: Manifest, champion: Champion, test: Evaluation, rows: dict[str, int],
                 threshold: Threshold, run_id: str, full_data: bool = False, calibration: str | None = None,
                 card: str = "") -> tuple[str, dict[str, str]]:
    """What a registered version is, for the registry page: a description and tags (the family or
    the stack's members, its calibration method (``calibration``, the champion's by default), CV and
    test scores, the threshold, the rows it was fitted on, the dataset and the run that made it);
    ``card``, the line that leads to the version's model card, ends the description."""
    scoring = job.search.scoring
    members = ", ".join(champion.members)
    what = f"stack of {members}" if champion.name == STACK else champion.name
    refit = "train + test rows" if rows["final"] > rows["search"] else "the search rows"
    when = "before the refit"
    if full_data:  # xgboost on every train row won on the validation split over the sample champion
        what, members, refit, when = "xgboost (full-data fit)", "xgboost", "every train row", "the registered model"
    test_auc = test.metrics["roc_auc"]
    calibration = calibration or champion.calibration.method
    description = (f"churn model from job {job.name}: {what}, calibration {calibration}. "
                   f"CV {scoring} {champion.cv_score:.4f} ± {champion.cv_std:.4f} (the sample search's champion); "
                   f"test roc_auc {test_auc:.4f} ({when}). "
                   f"Decision threshold {threshold.value:.3f} (from {threshold.source}). "
                   f"Fitted on {rows['final']:,} rows ({refit}) of dataset {manifest.dataset}. Run {run_id}."
                   + (f"\n\n{card}" if card else ""))
    tags = {"family": "xgboost" if full_data else champion.name, "members": members,
            f"cv_{scoring}": f"{champion.cv_score:.4f}",
            "test_roc_auc": f"{test_auc:.4f}", "threshold": f"{threshold.value:.4f}",
            "rows_fitted": str(rows["final"]), "dataset": manifest.dataset, "run_id": run_id, "job": job.name}
    return description, tags


def log_plots(job: JobSpec, families: dict[str, SearchResult], test: Evaluation,
              importance: pd.DataFrame | None, raw: ScoreSummary | None = None, calibration: str = "") -> None:
    """The evaluation pictures, their curves drawn from ``test.summary`` (the test scores' summary);
    ``importance`` (feature, mean, std) adds the permutation plot, ``raw`` (the summary of the test
    probabilities before the calibration map) a second reliability curve."""
    m = test.metrics
    if test.summary is None:
        raise ValueError("the evaluation holds no score summary to draw its curves from")
    figures = {
        "roc.png": plots.roc(test.summary),
        "precision_recall.png": plots.pr(test.summary),
        "calibration.png": plots.calibration(test.summary, raw, calibration),
        "lift_gains.png": plots.lift_gains(test.lift),
        "confusion_matrix.png": plots.confusion(test.confusion, m["threshold"]),
        "cv_score_by_family.png": plots.family_scores(
            {f: r.cv_results["mean_test_score"].to_numpy() for f, r in families.items()}, job.search.scoring),
    }
    if importance is not None:
        figures["permutation_importance.png"] = plots.importance(
            importance["feature"].tolist(), importance["mean"].to_numpy(np.float64),
            importance["std"].to_numpy(np.float64))
        mlflow.log_dict({r.feature: {"mean": float(r.mean), "std": float(r.std)} for r in importance.itertuples()},
                        "evaluation/permutation_importance.json")
    for name, fig in figures.items():
        mlflow.log_figure(fig, f"plots/{name}")
        plt.close(fig)


def log_graph(mermaid: str, ranks: list[list[list[str]]], title: str) -> None:
    """The job's stage graph with each stage's wall time and rows: Mermaid text and a picture."""
    mlflow.log_text(mermaid, "graph/stages.mmd")
    fig = plots.flow_chart(ranks, title)
    mlflow.log_figure(fig, "graph/stages.png")
    plt.close(fig)
