"""The train job: ingest → split → preflight → search → calibrate → full-data (a train split larger than
``search.max_rows``) → evaluate → finalize → track. Wiring only: the logic lives in :mod:`churn.data`,
:mod:`churn.modeling` and :mod:`churn.tracking`."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from distributed import Client
from distributed.scheduler import KilledWorker

from churn.clusters import ClusterError, xgboost_collective
from churn.config import ClusterSpec, JobSpec, SplitSpec, setting
from churn.config.families import imbalance_used
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN, SPLIT_COLUMN
from churn.data.ingest import Dataset, check_headers, check_output_folder, ingest
from churn.data.publish import release
from churn.data.split import (
    check_counts,
    check_validation_counts,
    class_counts,
    load_splits,
    sample_rows,
    search_sample,
)
from churn.jobs.graph import to_mermaid, train_graph
from churn.modeling.calibrate import BaggingChoice, Champion, assemble, bagged, bagging_choice, choose_champion
from churn.modeling.evaluate import Evaluation, Threshold, choose_threshold, evaluation_from, permutation_table
from churn.modeling.full_data import (
    VALIDATION_SOURCE,
    Choice,
    calibrate_on_validation,
    fit_full,
    full_data_model,
    score_with,
    validation_scores,
)
from churn.modeling.pipeline import build_pipeline, grid_for, imbalance_of, inference_pipeline, kept_features
from churn.modeling.preflight import check_grids, round_trip_once
from churn.modeling.screen import SumsChoice, choose_sums, sums_in
from churn.modeling.search import (
    Progress,
    RowsOnCluster,
    SearchResult,
    folds,
    gather_fold_models,
    refit_best,
    refit_fold_models,
    rescore_best,
    search_families,
)
from churn.modeling.search_cache import FitCheckpoints, SearchCache, search_key
from churn.modeling.summary import summaries_on_cluster, summarise_on_cluster
from churn.monitoring.batch import reference_profile
from churn.serving.calibration import ChurnClassifier
from churn.tracking.model_card import card_facts, card_link, log_card
from churn.tracking.names import check_experiment, check_names
from churn.tracking.promotion import (
    Gate,
    Promotion,
    check_settings,
    gate_score,
    model_fingerprint,
    owner_check,
    promote,
    test_rows_id,
    version_score,
)
from churn.tracking.registry import describe_version, input_example, log_model, serving_rules
from churn.tracking.run_log import (
    log_champion,
    log_family,
    log_feature_sums,
    log_graph,
    log_plots,
    log_row_notes,
    log_seconds,
    mark_replaced,
    mark_search_reused,
    parent_run,
    set_stage,
    version_card,
)
from churn.tracking.run_state import claim_run
from churn.tracking.store import check_store, resolve_uri

log = logging.getLogger(__name__)

STAGES = ("ingest", "split", "preflight", "search", "calibrate", "full-data", "evaluate", "finalize", "track")
FULL_DATA_FAMILY = "xgboost"  # the family the full-data fit trains (xgboost.dask) on tables above search.max_rows


@dataclass
class TrainResult:
    """What a train run produced, for the CLI summary and for tests."""

    run_id: str
    tracking_uri: str
    model_uri: str
    model_version: str
    dataset: Dataset
    families: dict[str, SearchResult]
    champion: Champion
    threshold: Threshold
    test: Evaluation  # of the model before finalising: the sample champion, or the full-data model when it won
    rows: dict[str, int]
    kept_features: list[str]
    model: ChurnClassifier  # the registered model (finalised unless model.finalize is off)
    seconds: dict[str, float] = field(default_factory=dict)
    feature_sums: dict[str, list[str]] = field(default_factory=dict)  # the sums every searched pipeline adds
    promotion: Promotion | None = None  # what the gate did with the version, and the alias it holds
    full_data: Choice | None = None  # the full-data model against the sample champion, when the fit ran
    # fits that saw fewer rows than their split holds, and why: "search", "finalize", "registered", "<family>"
    row_notes: dict[str, str] = field(default_factory=dict)
    validation: float = 0.0  # the validation fraction used (split.validation, auto resolved)
    # with a full-data fit: the test metrics of both candidates ("sample champion", "full-data xgboost")
    test_by_model: dict[str, Evaluation] = field(default_factory=dict)
    preflight_reused: bool = False  # the round-trip preflight passed before for the same data, spec and code
    bagging: BaggingChoice | None = None  # whether the champion's members are its fold models, averaged

    @property
    def search(self) -> SearchResult:
        """The search of the champion's best family."""
        return self.families[self.champion.members[0]]


def preflight(job: JobSpec) -> str:
    """Every check that needs no cluster, before one starts; returns the tracking URI."""
    check_headers(job.data.paths(), job.table, job.data.encoding)
    check_output_folder(job)
    check_grids(job)
    check_settings(job.tracking.alias)
    uri = resolve_uri(job.tracking)
    check_store(uri)
    check_names(job.tracking)
    check_experiment(uri, job.tracking.experiment)
    return uri


@contextmanager
def _stage(name: str, seconds: dict[str, float], detail: str = "") -> Iterator[None]:
    log.info("stage %d/%d %s%s", STAGES.index(name) + 1, len(STAGES), name, f": {detail}" if detail else "")
    set_stage(name)
    t = time.perf_counter()
    try:
        yield
    except KilledWorker as exc:  # a task (not a block: those are named by map_blocks) kept killing workers
        raise ClusterError(f"stage {name}: task {exc.task!r} killed every worker that ran it "
                           f"({exc.allowed_failures + 1} attempts); the worker logs say why") from None
    seconds[name] = time.perf_counter() - t


def _search_families(job: JobSpec, X: pd.DataFrame, y: pd.Series, client: Client, rows: RowsOnCluster | None,
                     progress: Progress | None = None, checkpoints: FitCheckpoints | None = None
                     ) -> tuple[dict[str, SearchResult], SumsChoice]:
    sums = choose_sums(job, X, y, client, rows)
    searches = {}
    for fam in job.model.families:
        cap = job.model.row_cap(fam)
        capped = f", fits on at most {cap:,} of {len(X):,} rows" if cap and cap < len(X) else ""
        log.info("search %s (imbalance %s%s)", fam, imbalance_used(fam, job.model.imbalance), capped)
        searches[fam] = (build_pipeline(job.table, fam, job.model.imbalance, job.seed, cap, sums.groups),
                         grid_for(fam, job.model.grids.get(fam), job.model.selection, job.model.imbalance))
    families = search_families(searches, X, y, cv=job.search.cv, scoring=job.search.scoring, seed=job.seed,
                               client=client, engine=job.search.engine, strategy=job.search.strategy,
                               progress=progress, rows=rows, checkpoints=checkpoints)
    for fam, res in families.items():
        cap = job.model.row_cap(fam)
        res.imbalance = imbalance_of(res.best_params, fam, job.model.imbalance)
        res.rows_per_fit = min(cap, len(X)) if cap else len(X)
    return families, sums


def _resumed(families: dict[str, SearchResult], checkpoints: FitCheckpoints, run_id: str) -> None:
    """Say whose fits the search restored from checkpoints: this run's own (a ``churn submit`` driver
    run again), or an earlier run's, whose driver stopped mid-search and which this run replaces (tagged)."""
    restored = sum(res.fits_restored for res in families.values())
    if not restored:
        return
    total = sum(res.n_fits for res in families.values())
    earlier = sorted(checkpoints.restored_from - {run_id})
    if earlier:
        log.info("search: %d of %d fits restored from the checkpoints of run %s, whose driver stopped mid-search; "
                 "this run replaces it", restored, total, ", ".join(earlier))
        mark_replaced(earlier)
    else:
        log.info("search: %d of %d fits restored from this run's own checkpoints (its driver was run again)",
                 restored, total)


def _sample_note(rows: dict[str, int], max_rows: int) -> dict[str, str]:
    """The search sample, when it holds fewer rows than the train split."""
    if rows["search"] >= rows["train"]:
        return {}
    note = f"{rows['search']:,} of {rows['train']:,} train rows (search.max_rows={max_rows:,})"
    log.info("search sample: %s", note)
    return {"search": note}


def _unused_validation_note(rows: dict[str, int], full_data: bool) -> dict[str, str]:
    """Validation rows that nothing will use (a fraction set by hand where no full-data fit runs)."""
    if full_data or not rows["validation"]:
        return {}
    why = ("the train split fits in search.max_rows" if rows["train"] <= rows["search"]
           else f"the job has no {FULL_DATA_FAMILY} family")
    note = (f"{rows['validation']:,} labelled rows held out as validation are used by nothing ({why}, so no "
            "full-data fit): set split.validation to auto or 0 to train on them")
    log.warning("validation split: %s", note)
    return {"validation": note}


def _cap_notes(families: dict[str, SearchResult], search_rows: int) -> dict[str, str]:
    """Families whose fits saw fewer rows than the search sample (``model.max_rows``)."""
    out = {}
    for fam, res in families.items():
        if 0 < res.rows_per_fit < search_rows:
            out[fam] = f"each fit on at most {res.rows_per_fit:,} of {search_rows:,} search rows (model.max_rows.{fam})"
            log.info("%s: %s", fam, out[fam])
    return out


def _finalize_note(job: JobSpec, rows: dict[str, int], full_won: bool, bagged_members: bool = False
                   ) -> dict[str, str]:
    """Why ``finalize`` did not refit on train + test rows, when it did not."""
    if not job.model.finalize:
        why = "model.finalize is false: the registered model learned from the train rows only"
    elif rows["search"] < rows["train"]:
        why = (f"the train split ({rows['train']:,} rows) is larger than search.max_rows={job.search.max_rows:,}: "
               + ("the full-data model learned from every train row; the test split stays for the report"
                  if full_won else f"the registered model is the sample champion, fitted on {rows['search']:,} of "
                  f"{rows['train']:,} train rows"))
    elif bagged_members:
        why = ("the members are bagged fold models, whose out-of-fold scores fitted the calibration and the "
               "threshold: a refit would serve models those were not fitted on")
    else:
        return {}
    log.info("finalize skipped: %s", why)
    return {"finalize": f"skipped: {why}"}


def _registered_rows(rows: dict[str, int], finalized: bool, full_won: bool) -> str:
    """What the registered model learned from, in words."""
    if finalized:
        return "train + test"
    if full_won:
        return "every train row (full-data xgboost)"
    return "search rows" if rows["search"] == rows["train"] else \
        f"search sample ({rows['search']:,} of {rows['train']:,} train rows)"


def _full_data_skipped(job: JobSpec, rows: dict[str, int]) -> str | None:
    """Why the full-data fit cannot run on a train split larger than the search sample (None: it runs)."""
    sample_only = (f"the registered model learned from the search sample only ({rows['search']:,} of "
                   f"{rows['train']:,} train rows)")
    if FULL_DATA_FAMILY not in job.model.families:
        return (f"the job has no {FULL_DATA_FAMILY} family, the one the full-data fit trains on every train row: "
                f"{sample_only}; add {FULL_DATA_FAMILY} to model.families")
    if not rows["validation"]:  # split.validation 0, or auto on a train split just above the sample
        return (f"no validation rows to stop early on and choose with (split.validation {job.split.validation}): "
                f"{sample_only}; set split.validation above 0, or raise search.max_rows to {rows['train']:,} to "
                "search on every train row")
    return None


def _ladder_rows(search_rows: int) -> int | None:
    """Train rows the full-data fit's depth ladder runs on (None: no ladder, ``ladder-rungs`` below 2)."""
    if int(setting("full-data.ladder-rungs")) < 2:
        return None
    return int(setting("full-data.ladder-rows-factor")) * search_rows


def _full_data(job: JobSpec, ddf: Any, train: pd.DataFrame, families: dict[str, SearchResult],
               sample_model: ChurnClassifier, counts: dict[str, dict[int, int]], client: Client, rows: dict[str, int],
               cluster: ClusterSpec | None = None
               ) -> tuple[Choice, ChurnClassifier, Threshold, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Train the xgboost family's best configuration on every train row (XGBoost's tracker where
    ``cluster``, the spec that started the cluster, says), score it and the sample champion on the
    validation split, and return the choice, with the full-data model, its threshold (its
    calibration map and threshold from the validation split), and its calibrated probabilities,
    labels and keys of the validation rows (none scored by a map fitted on it: the monitoring
    reference's scores when it is registered)."""
    features, scoring = job.table.features, job.search.scoring
    valid = ddf[ddf[SPLIT_COLUMN] == "validation"]
    fit = fit_full(ddf[ddf[SPLIT_COLUMN] == "train"], valid, features, families[FULL_DATA_FAMILY].best_estimator,
                   train.head(100), job.seed, scoring, client, counts, collective=xgboost_collective(cluster, client),
                   ladder_rows=_ladder_rows(rows["search"]))
    full = full_data_model(fit)
    y_v, scores, keys = validation_scores(valid, [sample_model, full], features, client)  # one read of the split
    p_sample, s_full = scores[:, 0], scores[:, 1]
    cal, at, p_full = calibrate_on_validation(y_v, s_full, method=job.model.calibration, cv=job.search.cv,
                                              seed=job.seed, max_rows=job.search.max_rows)
    full_score, sample_score = score_with(scoring, y_v, p_full), score_with(scoring, y_v, p_sample)
    choice = Choice("full-data" if full_score > sample_score else "sample", scoring, full_score, sample_score,
                    fit.rows, rows["search"], len(y_v), len(at), fit.rounds, fit.seconds, cal.method,
                    fit.workers, int(fit.params["max_depth"]), fit.ladder_line, fit.levels_line)
    log.info("full-data fit: %s", choice.line)
    chosen = choose_threshold(y_v[at], cal.oof_proba, job.evaluation.economics)
    threshold = replace(chosen, source=f"{VALIDATION_SOURCE}, {len(at):,} rows")
    return choice, assemble([full], cal, [FULL_DATA_FAMILY]), threshold, (p_full, y_v, keys)


def run(job: JobSpec, client: Client, job_file: str | None = None, run_id: str | None = None,
        progress: Progress | None = None, force_promote: bool = False, cluster: ClusterSpec | None = None
        ) -> TrainResult:
    """Run the whole train job on ``client``'s cluster; log it all to one MLflow run (``run_id``:
    resume that run, made by ``churn submit``; ``progress``: told after each finished fit;
    ``force_promote``: the new version becomes ``@champion`` whatever the promotion gate says;
    ``cluster``: the spec that started the cluster, whose ``xgboost`` section places the full-data
    fit's tracker)."""
    schema, features = job.table, job.table.features
    seconds: dict[str, float] = {}
    uri = resolve_uri(job.tracking)
    with parent_run(uri, job, job_file, run_id) as parent:
        token = claim_run(uri, parent.info.run_id)  # checked again before registering and moving aliases
        with _stage("ingest", seconds, job.data.source):
            dataset = ingest(job, client)

        split = job.split.resolved(dataset.manifest.rows_kept, job.search.max_rows)
        if job.split.validation == "auto":
            if split.validation:
                why = "the train split is larger than search.max_rows: early stopping and the choice of model"
            elif dataset.manifest.rows_kept * (1 - split.test) > job.search.max_rows:
                why = f"a share would leave the train split within search.max_rows={job.search.max_rows:,}"
            else:
                why = f"the train split fits in search.max_rows={job.search.max_rows:,}"
            if split.validation and FULL_DATA_FAMILY not in job.model.families:
                split = SplitSpec(test=split.test, validation=0.0)  # no full-data fit: the rows would serve nothing
                why = f"no {FULL_DATA_FAMILY} family, so no full-data fit to stop early or choose"
            log.info("split.validation auto: %.1f %% of %s labelled rows (%s)", 100 * split.validation,
                     f"{dataset.manifest.rows_kept:,}", why)
        with _stage("split", seconds, f"test {split.test:.0%}, validation {split.validation:.1%}, "
                                      f"seed {job.seed}"):
            ddf = load_splits(str(dataset.data_path), split, job.seed)
            counts = class_counts(ddf, client)
            check_counts(counts, cv=job.search.cv, max_rows=job.search.max_rows, positive=schema.positive,
                         negative=schema.negative)
            test_ddf = ddf[ddf[SPLIT_COLUMN] == "test"]
            train, n_train = search_sample(ddf[ddf[SPLIT_COLUMN] == "train"], job.search.max_rows, job.seed,
                                           client, counts=counts["train"])
            rows = {"train": n_train, "search": len(train), "validation": sum(counts["validation"].values())}
            full_data = rows["train"] > rows["search"] and FULL_DATA_FAMILY in job.model.families
            if full_data and rows["validation"]:
                check_validation_counts(counts["validation"], cv=job.search.cv, positive=schema.positive,
                                        negative=schema.negative)  # before the search, not after it
            notes = {**_sample_note(rows, job.search.max_rows), **_unused_validation_note(rows, full_data)}
            X, y = train[features], train[LABEL_COLUMN].astype(int)

        with _stage("preflight", seconds, "each family's model saved and loaded back as registered"):
            key = search_key(job, dataset.manifest.dataset, len(train))
            reused_preflight = round_trip_once(job, X, y, int(setting("preflight.round-trip-rows")), key)
            if reused_preflight:
                log.info("preflight: data, spec and code unchanged: the round trip passed before")

        with _stage("search", seconds, f"{len(job.model.families)} families, cv={job.search.cv}, {len(train):,} rows"):
            # the search rows go to the workers once, for the sums screen, the search and the rescoring
            on_cluster = RowsOnCluster(X, y, client) if client is not None else None
            cache = SearchCache(Path(job.data.output) / "search-cache", key)
            families = cache.load(job.model.families) if job.search.reuse else None
            if families is not None:
                log.info("search: data, spec and code unchanged: reusing the search in %s", cache.folder)
                mark_search_reused(cache.key)
                sums = sums_in(families, job)
            else:
                # each finished fit is kept as it ends; a rerun after this driver was lost fits only the rest
                checkpoints = FitCheckpoints(cache.folder.parent, key, parent.info.run_id, resume=job.search.reuse)
                families, sums = _search_families(job, X, y, client, on_cluster, progress, checkpoints)
                _resumed(families, checkpoints, parent.info.run_id)
                cache.save(families)  # the entry replaces the folder, checkpoints and all
            # after the save, so a failure here keeps the search; a reused search gets only missing repeats
            if client is not None and rescore_best(families, X, y, cv=job.search.cv, seed=job.seed,
                                                   repeats=job.search.repeats, scoring=job.search.scoring,
                                                   client=client, rows=on_cluster,
                                                   keep_models=job.model.bagging is not False):
                cache.save(families)
            log_feature_sums(sums)
            notes.update(_cap_notes(families, rows["search"]))

        with _stage("calibrate", seconds, f"stack of up to {job.model.ensemble}, calibration "
                                          f"{job.model.calibration}, threshold on out-of-fold"):
            repeats = [list(folds(job.search.cv, job.seed, r).split(X, y)) for r in range(job.search.repeats)]
            champion = choose_champion(families, y.to_numpy(), repeats, job.search.scoring, job.model.ensemble,
                                       job.model.calibration)
            missing = [f for f in champion.members if not families[f].fold_models]
            if job.model.bagging is not False and client is not None and champion.calibrated_on == 1 and missing:
                # a reused search whose cache holds no fold models of these families: fitted again (seeded, so
                # the same scores), and the champion chosen on their scores
                refit_fold_models(families, missing, X, y, cv=job.search.cv, seed=job.seed,
                                  scoring=job.search.scoring, client=client, rows=on_cluster)
                champion = choose_champion(families, y.to_numpy(), repeats, job.search.scoring,
                                           job.model.ensemble, job.model.calibration)
            gather_fold_models(families, champion.members, client)  # the members' come back, the rest are freed
            # the rows the evaluation scores with the model: the test split, and with plots the permutation
            # importance's 4 shuffles of each feature in its sample (and the sample as it is)
            n_test = sum(counts["test"].values())
            scored = n_test + (min(job.evaluation.permutation_rows, n_test) * (4 * len(features) + 1)
                               if job.evaluation.plots else 0)
            workers = len(client.scheduler_info()["workers"]) if client is not None else 1
            bagging = bagging_choice(families, champion.members, y.to_numpy(), repeats[:champion.repeats],
                                     job.search.scoring, job.model.bagging, scored, workers)
            threshold = choose_threshold(y.to_numpy(), champion.oof_proba, job.evaluation.economics)
            if bagging.bagged:
                cache.save_fold_models(families, champion.members)
                fitted = [bagged(families[f].fold_models) for f in champion.members]
                notes["bagging"] = (f"each member is the mean of {job.search.cv} fold models, each fitted on "
                                    f"{job.search.cv - 1}/{job.search.cv} of the {rows['search']:,} search rows "
                                    f"({bagging.reason})")
            else:
                fitted = [inference_pipeline(families[f].best_estimator) for f in champion.members]
            model = assemble(fitted, champion.calibration, champion.members)
            log.info("champion %s (CV %s %.4f ± %.4f), %s, calibration %s and threshold %.3f on the out-of-fold "
                     "scores of repeat %d", champion.name, job.search.scoring, champion.cv_score, champion.cv_std,
                     f"bagged ({bagging.reason})" if bagging.bagged else f"refitted ({bagging.reason})",
                     champion.calibration.method, threshold.value, champion.calibrated_on + 1)

        full_choice, others, full_scores = None, {}, None
        skipped = _full_data_skipped(job, rows) if rows["train"] > rows["search"] else None
        if skipped:
            log.warning("full-data fit skipped: %s", skipped)
            notes["full-data"] = f"skipped: {skipped}"
        elif rows["train"] > rows["search"]:
            with _stage("full-data", seconds, f"{FULL_DATA_FAMILY} on {rows['train']:,} train rows, early stopping on "
                                              f"{rows['validation']:,} validation rows"):
                full_choice, full_model, full_threshold, full_scores = _full_data(job, ddf, train, families, model,
                                                                                  counts, client, rows, cluster)
                others = {"sample champion": (model, threshold), "full-data xgboost": (full_model, full_threshold)}
                if full_choice.winner == "full-data":
                    model, threshold, fitted = full_model, full_threshold, full_model.members

        with _stage("evaluate", seconds, f"test split, threshold {threshold.value:.3f} from {threshold.source}"):
            # one pass over the test split: per partition on the workers, each member's raw score, the
            # calibrated probability, and their summaries; only the merged summaries come back
            with_raw = hasattr(model.members[0], "predict_proba")
            summaries = summaries_on_cluster(test_ddf, model, features, client, (threshold.value, threshold.f1),
                                             raw=with_raw)
            rows["test"] = summaries["proba"].rows
            test = evaluation_from(summaries["proba"], threshold.value, economics=job.evaluation.economics,
                                   top_k=job.evaluation.top_k, f1_cut=threshold.f1)
            m = test.metrics
            log.info("test: ROC AUC %.4f (error bound %.1e), PR AUC %.4f (error bound %.1e), Brier %.4f, log loss "
                     "%.4f on %s rows, from per-partition score summaries", m["roc_auc"], m["roc_auc_error_bound"],
                     m["pr_auc"], m["pr_auc_error_bound"], m["brier"], m["log_loss"], f"{rows['test']:,}")
            first = fitted[0]
            kept = list(dict.fromkeys(f for m in getattr(first, "members", [first]) for f in kept_features(m)))
            # the best member's own probabilities, for the before/after calibration plot
            raw = summaries.get("raw")
            # with a full-data fit, both candidates' test metrics, for the report only (the choice was
            # made on the validation split): what every row bought over the sample
            test_by_model = {name: (test if other is model else evaluation_from(
                summarise_on_cluster(test_ddf, other, features, client, (t.value,)), t.value))
                for name, (other, t) in others.items()}
            for name, ev in test_by_model.items():
                log.info("test of the %s: ROC AUC %.4f, PR AUC %.4f, Brier %.4f", name, ev.metrics["roc_auc"],
                         ev.metrics["pr_auc"], ev.metrics["brier"])
            importance = None
            if job.evaluation.plots:
                sample = sample_rows(test_ddf, rows["test"], job.evaluation.permutation_rows, job.seed, client)
                importance = permutation_table(model, sample, features, job.seed, client)

        registered, rows["final"] = model, rows["search"]
        full_won = full_choice is not None and full_choice.winner == "full-data"
        if full_won:
            rows["final"] = rows["train"]
        finalized = job.model.finalize and rows["search"] == rows["train"] and not bagging.bagged
        notes.update(_finalize_note(job, rows, full_won, bagging.bagged))
        if finalized:
            with _stage("finalize", seconds, f"refit {', '.join(champion.members)} on train + test rows"):
                test_rows = test_ddf[[*features, LABEL_COLUMN]].compute()
                X_all = pd.concat([X, test_rows[features]])
                y_all = pd.concat([y, test_rows[LABEL_COLUMN].astype(int)])
                refits = refit_best([families[f] for f in champion.members], X_all, y_all, client)
                registered = assemble([inference_pipeline(r) for r in refits], champion.calibration,
                                      champion.members)
                rows["final"] = len(X_all)

        with _stage("track", seconds, f"{uri} (experiment {job.tracking.experiment})"):
            for fam, res in families.items():
                log_family(job, fam, res)
            # the registered model's calibration: the full-data model's own map when it won
            calibration = full_choice.calibration if full_won else champion.calibration.method
            log_champion(job, dataset.manifest, families, champion, test, rows, threshold, kept,
                         registered=_registered_rows(rows, finalized, full_won), calibration=calibration)
            log_row_notes(notes, rows, split.validation, full_choice, test_by_model)
            if job.evaluation.plots:
                log_plots(job, families, test, importance, raw, calibration)
            # the scores the monitor compares batches with are the registered model's, on rows it was not
            # fitted on: the champion's out-of-fold ones, or the full-data model's on the validation split
            scores = (full_scores if full_won else
                      (champion.oof_proba, y.to_numpy(), train[KEY_COLUMN].to_numpy()))
            reference = reference_profile(ddf[ddf[SPLIT_COLUMN] == "train"], X, *scores, schema, client)
            name, scoring = job.tracking.registered_model, job.search.scoring

            def register() -> str:
                # the model card's facts (segment summaries on the cluster, the bootstrap) are of the model the
                # test metrics are of; gathered only when a version is registered, rendered once it has its number
                card = card_facts(job, dataset.manifest, families, champion, test, rows, threshold, notes,
                                  calibration=calibration, registered_rows=_registered_rows(rows, finalized, full_won),
                                  model=model, test_ddf=test_ddf, client=client, run_id=parent.info.run_id,
                                  experiment_id=parent.info.experiment_id, tracking_uri=uri,
                                  example=input_example(train, schema), full_data=full_choice,
                                  test_by_model=test_by_model, raw=raw)
                info = log_model(registered, input_example(train, schema), threshold.value,
                                 job.tracking.registered_model, schema, reference)
                version = str(info.registered_model_version)
                card_tags = log_card(card, version)
                description, tags = version_card(job, dataset.manifest, champion, test, rows, threshold,
                                                 parent.info.run_id, full_data=full_won, calibration=calibration,
                                                 card=card_link(card))
                describe_version(name, version, description, tags | card_tags)
                return version

            # the gate scores the champion on this run's test rows as the new model was scored above
            gate = Gate(name, job.tracking.alias, scoring, gate_score(scoring, test.summary, threshold.value),
                        serving_rules(schema), lambda v: version_score(name, v, test_ddf, features, client, scoring),
                        test_rows=test_rows_id(dataset.manifest.dataset, split.test, split.validation,
                                               job.seed),
                        refit_on_test=finalized)
            # a full-data model depends on the workers it trained on: a rerun on others is another model
            fingerprint = model_fingerprint(job, dataset.manifest.dataset, len(train),
                                            full_choice.workers if full_won else None)
            promotion = promote(gate, fingerprint, register,
                                owner_check(uri, parent.info.run_id, token), force=force_promote)
            version = promotion.version
        log_seconds(seconds)
        result = TrainResult(parent.info.run_id, uri, f"models:/{job.tracking.registered_model}/{version}",
                             version, dataset, families, champion, threshold, test, rows, kept, registered, seconds,
                             feature_sums=sums.groups, promotion=promotion, full_data=full_choice, row_notes=notes,
                             test_by_model=test_by_model,
                             validation=split.validation, preflight_reused=reused_preflight, bagging=bagging)
        graph = train_graph(job, result)
        log_graph(to_mermaid(graph), [[graph.nodes[n] for n in rank] for rank in graph.ranks],
                  f"churn train: {job.name}")
        set_stage("done")
    if dataset.version is not None:  # a long-lived process (a notebook) keeps no lock on it: cleanups may go on
        release(dataset.version)
    return result
