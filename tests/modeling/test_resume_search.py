"""A search that survives its driver: each finished fit is checkpointed as it ends, and a rerun of
the same search fits only the ones that were not, with the same ``cv_results_``."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from churn.config import load_job
from churn.data.validate import validate_partition
from churn.modeling.pipeline import build_pipeline, grid_for
from churn.modeling.plan import SearchPlan, plan
from churn.modeling.search import churn_grid_searches, folds
from churn.modeling.search_cache import FitCheckpoints
from tests.conftest import ROOT, TELCO, job_spec
from tests.modeling.fit_count import FitCount, fits_run, reset

TIMES = ["mean_fit_time", "std_fit_time", "mean_score_time", "std_score_time"]  # wall times: never equal twice
FIT = ((("resample__method", "'none'"),), (("max_depth", "4"),))  # a fit group key as the plan writes it


def _output(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {None: {"score": float(rng.random()), "proba": rng.random(7), "fit_time": 0.25, "score_time": 0.01,
                   "prepare_seconds": 0.5}}


def test_checkpoints_come_back_exactly_and_damaged_ones_are_refitted(tmp_path, caplog):
    """A saved fit comes back equal (a forest's sizes too); a damaged file, one holding another fit
    or an untrusted type is left out with a warning (so it is fitted again); with ``resume`` off
    nothing is restored; the file name is the same in every process (no Python ``hash``)."""
    store = FitCheckpoints(tmp_path, "key", run_id="run-1")
    forest = {10: {**_output(1)[None]}, 20: {**_output(2)[None]}}
    fits = [(FIT, 0), (FIT, 1), (FIT, 2), (FIT, 3)]
    store.save("decision_tree", fits[0], _output(0))
    store.save("random_forest", fits[0], forest)
    assert store.count() == 2
    assert store.path("decision_tree", fits[0]).name == "d8dcda4e2cf767e1d137013a.skops"  # any process, any run
    back = FitCheckpoints(tmp_path, "key").restore("decision_tree", fits)
    assert list(back) == [fits[0]]
    assert back[fits[0]][None]["score"] == _output(0)[None]["score"]
    np.testing.assert_array_equal(back[fits[0]][None]["proba"], _output(0)[None]["proba"])
    again = FitCheckpoints(tmp_path, "key")
    rf = again.restore("random_forest", fits)[fits[0]]
    assert sorted(rf) == [10, 20] and rf[20]["fit_time"] == 0.25 and again.restored_from == {"run-1"}

    for i in (1, 2, 3):
        store.save("decision_tree", fits[i], _output(i))
    store.path("decision_tree", fits[1]).write_bytes(b"not a skops file")
    shutil.copy(store.path("decision_tree", fits[0]), store.path("decision_tree", fits[2]))
    sio.dump({"fit": repr(fits[3]), "run": "x", "results": [pd.Timedelta(1)]},
             str(store.path("decision_tree", fits[3])))
    with caplog.at_level(logging.WARNING):
        back = FitCheckpoints(tmp_path, "key").restore("decision_tree", fits)
    assert list(back) == [fits[0]]
    assert caplog.text.count("fitting it again") == 3
    assert "holds another fit" in caplog.text and "untrusted types" in caplog.text
    assert FitCheckpoints(tmp_path, "key", resume=False).restore("decision_tree", fits) == {}


@pytest.mark.cluster
def test_resumed_search_fits_only_the_missing_fits(client, tmp_path, caplog):
    """Half the checkpoints of a finished search deleted and one damaged: the rerun fits exactly
    the missing and damaged ones (counted on the scheduler), restores the rest, and ends with the
    same ``cv_results_``, best candidate and out-of-fold scores; a candidate whose every fit was
    restored keeps the fit times of the first run."""
    job = load_job(ROOT / "jobs" / "train.yaml")
    raw = pd.read_csv(TELCO, dtype=str, keep_default_na=False).head(600)
    clean, _ = validate_partition(raw, job.table, "x", np.arange(len(raw)))
    X, y = clean[job.table.features], clean["_label"].astype(int)
    grids = {"decision_tree": {"max_depth": [3, 4, 6], "min_samples_leaf": [5, 20]},
             "random_forest": {"n_estimators": [5, 10], "min_samples_leaf": [1, 5]}}
    imbalance = ["none", "class_weight"]
    searches = {f: (build_pipeline(job.table, f, imbalance, 1), grid_for(f, g, job.model.selection, imbalance))
                for f, g in grids.items()}

    def search(run_id: str) -> dict:
        return churn_grid_searches(searches, X, y, cv=folds(3, 1), scoring="roc_auc", client=client,
                                   checkpoints=FitCheckpoints(tmp_path, "key", run_id))

    client.register_plugin(FitCount())
    client.run_on_scheduler(reset)
    first = search("run-a")
    n_fits = {f: r.n_fits for f, r in first.items()}
    assert n_fits == {"decision_tree": 12 * 3, "random_forest": 4 * 3}  # forests share their sizes
    assert client.run_on_scheduler(fits_run) == sum(n_fits.values()) and first["decision_tree"].fits_restored == 0
    assert len(list(tmp_path.glob("key/fits/*/*.skops"))) == sum(n_fits.values())
    store = FitCheckpoints(tmp_path, "key")
    kept, damaged = set(), None
    for fam in searches:  # even fit groups keep every split, odd ones lose one
        for i, key in enumerate(sorted(search_plan(searches[fam]).groups)):
            for s in range(3):
                path = store.path(fam, (key, s))
                if i % 2 and s == i % 3:
                    path.unlink()
                elif damaged is None:
                    damaged = path
                    path.write_bytes(b"\0")
                else:
                    kept.add(path)
    client.run_on_scheduler(reset)
    with caplog.at_level(logging.INFO, logger="churn.modeling"):
        again = search("run-b")
    assert client.run_on_scheduler(fits_run) == sum(n_fits.values()) - len(kept)
    assert sum(r.fits_restored for r in again.values()) == len(kept)
    assert {f: r.n_fits for f, r in again.items()} == n_fits
    for fam, res in again.items():
        line = f"search {fam} resumed: {res.fits_restored} of {res.n_fits} fits restored from checkpoints"
        assert line in caplog.text
    assert "cannot use it" in caplog.text and damaged.name in caplog.text
    for fam, res in again.items():
        pd.testing.assert_frame_equal(res.cv_results.drop(columns=TIMES), first[fam].cv_results.drop(columns=TIMES))
        assert res.best_params == first[fam].best_params
        np.testing.assert_array_equal(res.oof_proba, first[fam].oof_proba)
        whole = [i for key, g in search_plan(searches[fam]).groups.items()
                 if all(store.path(fam, (key, s)) in kept for s in range(3))
                 for members in g.members.values() for i in members]
        assert whole, f"{fam}: no candidate had every fit restored"
        np.testing.assert_array_equal(res.cv_results["mean_fit_time"][whole],
                                      first[fam].cv_results["mean_fit_time"][whole])


def search_plan(search: tuple) -> SearchPlan:
    return plan(*search)


# a small job with 36 fits: logistic regression 2 C x 2 bases x 2 treatments, decision tree 2 depths x 2
# treatments, 3 folds; no feature-sums screen, no fresh repeat, no refit on test rows, no plots
SMALL_JOB = ["search.cv=3", "search.repeats=1", "model.families=[logistic_regression, decision_tree]",
             "model.imbalance=[none, class_weight]", "model.feature_sums=false", "model.finalize=false",
             "evaluation.plots=false",
             "model.grids={logistic_regression: {C: [0.1, 1.0], numeric_basis: [linear, spline]}, "
             "decision_tree: {max_depth: [4, 8], min_samples_leaf: [20]}}"]
SMALL_FITS = (8 + 4) * 3


@pytest.mark.cluster
def test_a_driver_killed_mid_search_is_resumed(forked_churn, tmp_path, telco_subset, record_property):
    """SIGKILL the `churn train` driver once about half the fits are checkpointed: the rerun of the
    same command runs exactly the fits that were not (counted on the scheduler), says so, tags the run
    it replaces, and its ``cv_results_`` equal those of the same search run uninterrupted in this
    process (all but the wall times)."""
    from churn.clusters import cluster_client
    from churn.data.ingest import ingest
    from churn.data.split import load_splits, search_sample
    from churn.jobs.train import _search_families
    from churn.modeling.search_cache import SearchCache, search_key
    from tests.clusters.test_clusters import dask_processes
    from tests.modeling.fit_count import search_tasks

    out, store = tmp_path / "ds", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["train", str(ROOT / "jobs" / "train.yaml"), "--set", f"data.source={telco_subset}",
            "--set", f"data.output={out}", "--set", f"tracking.uri={store}",
            *[a for o in SMALL_JOB for a in ("--set", o)]]
    with dask_processes(tmp_path, 2) as (address, _), cluster_client(address=address) as client:
        client.wait_for_workers(2, timeout=60)
        client.register_plugin(FitCount())
        driver = forked_churn.start(*args, "--scheduler", address)
        deadline = time.monotonic() + 300
        try:
            while len(list(out.glob("search-cache/*/fits/*/[!.]*.skops"))) < SMALL_FITS // 2:
                assert driver.poll() is None, "the driver ended before half the fits were done"
                assert time.monotonic() < deadline, "half the fits not checkpointed within 300 s"
                time.sleep(0.02)
        finally:
            driver.kill()
        [folder] = out.glob("search-cache/*")
        restored = len(list(folder.glob("fits/*/[!.]*.skops")))
        assert SMALL_FITS // 2 <= restored < SMALL_FITS, "the driver was killed after the search"
        while client.run_on_scheduler(search_tasks):  # the lost driver's tasks go with its client
            assert time.monotonic() < deadline, "the killed driver's tasks stayed on the scheduler"
            time.sleep(0.1)
        client.run_on_scheduler(reset)

        rerun = forked_churn.run(*args, "--scheduler", address, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert client.run_on_scheduler(fits_run) == SMALL_FITS - restored
        for name, value in (("fits", SMALL_FITS), ("checkpointed_at_kill", restored),
                            ("rerun_fits_run", client.run_on_scheduler(fits_run))):
            record_property(name, value)

        # the same search, uninterrupted, on the same rows (the dataset the jobs ingested, reused)
        job = job_spec(tmp_path, telco_subset, *SMALL_JOB, f"data.output={out}")
        dataset = ingest(job, client)
        ddf = load_splits(str(dataset.data_path), job.split.resolved(dataset.manifest.rows_kept,
                                                                     job.search.max_rows), job.seed)
        train, _ = search_sample(ddf[ddf["_split"] == "train"], job.search.max_rows, job.seed, client)
        assert search_key(job, dataset.manifest.dataset, len(train)) == folder.name
        calm, _ = _search_families(job, train[job.table.features], train["_label"].astype(int), client, None)

    said_all = re.sub(r"\s*\n {20}(?=\S)", " ", rerun.stderr)  # the log lines rich wrapped, joined again
    said = [int(n) for n in re.findall(r"search \w+ resumed: (\d+) of \d+ fits restored", said_all)]
    assert sum(said) == restored  # one line per family that had fits restored (the first family may have all)
    assert not (folder / "fits").exists(), "the saved search keeps its checkpoints"
    resumed = SearchCache(out / "search-cache", folder.name).load(list(calm))
    for fam in calm:
        pd.testing.assert_frame_equal(resumed[fam].cv_results.drop(columns=TIMES),
                                      calm[fam].cv_results.drop(columns=TIMES))
        assert resumed[fam].n_fits == calm[fam].n_fits
    assert sum(resumed[f].fits_restored for f in calm) == restored

    tracking = mlflow.MlflowClient(store)
    experiment = tracking.get_experiment_by_name(job.tracking.experiment)
    parents = [r for r in tracking.search_runs([experiment.experiment_id]) if "churn.stage" in r.data.tags]
    [killed] = [r for r in parents if r.info.status == "RUNNING"]  # its heartbeat is not old enough to be lost
    [done] = [r for r in parents if r.info.status == "FINISHED"]
    assert done.data.tags["churn.replaces_run"] == killed.info.run_id
    assert f"run {killed.info.run_id}, whose driver stopped mid-search; this run replaces it" in said_all


@pytest.mark.cluster
def test_a_submitted_job_whose_driver_worker_dies_continues_its_run(tmp_path, telco_subset):
    """SIGKILL the worker that runs a `churn submit` job's driver task once about half the fits are
    checkpointed: the scheduler runs the driver again on the other worker, and it finishes the job in
    the same MLflow run, its search restoring the checkpointed fits (no run replaced)."""
    from churn.clusters import cluster_client
    from churn.jobs.submit import submit
    from churn.tracking.run_state import run_status
    from tests.clusters.test_clusters import dask_processes

    job = job_spec(tmp_path, telco_subset, *SMALL_JOB)
    out, store = Path(job.data.output), job.tracking.uri
    with dask_processes(tmp_path, 2) as (address, _), cluster_client(address=address) as client:
        client.wait_for_workers(2, timeout=60)
        run_id = submit(job, client)
        deadline = time.monotonic() + 300
        while len(list(out.glob("search-cache/*/fits/*/[!.]*.skops"))) < SMALL_FITS // 2:
            assert not run_status(store, run_id).done, "the job ended before half the fits were done"
            assert time.monotonic() < deadline, "half the fits not checkpointed within 300 s"
            time.sleep(0.02)
        on = client.run_on_scheduler(lambda dask_scheduler, key: dask_scheduler.tasks[key].processing_on.address,
                                     key=f"churn-driver-{run_id}")
        os.killpg(os.getpgid(client.run(os.getpid, workers=[on])[on]), signal.SIGKILL)  # worker and nanny
        restored = len(list(out.glob("search-cache/*/fits/*/[!.]*.skops")))
        while not run_status(store, run_id).done:
            assert time.monotonic() < deadline + 300, "the job did not end within 600 s"
            time.sleep(0.5)
    run = mlflow.MlflowClient(store).get_run(run_id)
    assert run.info.status == "FINISHED", run.data.tags.get("churn.error")
    assert "churn.replaces_run" not in run.data.tags
    families = mlflow.MlflowClient(store).search_runs([run.info.experiment_id],
                                                      f"tags.`mlflow.parentRunId` = '{run_id}'")
    assert sum(r.data.metrics["fits"] for r in families) == SMALL_FITS
    assert SMALL_FITS // 2 <= sum(r.data.metrics["fits_restored"] for r in families) <= restored < SMALL_FITS
