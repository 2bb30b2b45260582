"""The full-data fit with xgboost.dask: trained on every train row, stopped early on the validation
split; refused in one line when the workers' memory cannot hold it; ended in one line when a worker
dies during it."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client

from churn.data.columns import LABEL_COLUMN
from churn.modeling.full_data import (
    FullDataFitError,
    FullDataMemoryError,
    Rung,
    bytes_per_row,
    check_memory,
    climb,
    collective_config,
    fit_full,
    full_data_model,
    memory_needed,
    widened,
)
from churn.modeling.pipeline import build_pipeline
from tests.clusters.test_clusters import dask_processes
from tests.conftest import TELCO, job_spec


def _telco_splits(tmp_path, partitions: int = 6) -> tuple:
    """Telco as raw train and validation Dask dataframes (a third for validation), the job, and the
    xgboost pipeline fitted on a 500-row sample of the train rows (the sample search's stand-in)."""
    job = job_spec(tmp_path, TELCO, "model.families=[xgboost]")
    frame = pd.read_csv(TELCO, na_values=[" "])
    frame[LABEL_COLUMN] = (frame["Churn"] == "Yes").astype(int)
    valid = np.arange(len(frame)) % 3 == 0
    train, validation = frame[~valid].reset_index(drop=True), frame[valid].reset_index(drop=True)
    features = job.table.features
    sample = train.sample(500, random_state=0)
    fitted = build_pipeline(job.table, "xgboost", "class_weight", job.seed).set_params(
        model__max_depth=3, model__n_estimators=20, model__max_bin=64, model__max_cat_to_onehot=8
    ).fit(sample[features], sample[LABEL_COLUMN])
    counts = {"train": train[LABEL_COLUMN].value_counts().to_dict(),
              "validation": validation[LABEL_COLUMN].value_counts().to_dict()}
    return (job, features, fitted, dd.from_pandas(train, npartitions=partitions),
            dd.from_pandas(validation, npartitions=max(1, partitions // 2)), train, validation, counts)


def test_full_data_fit_learns_from_every_train_row(client, tmp_path):
    """The booster learns from all train rows (not the 500-row sample), stops early on the validation
    split, keeps the best round, and the assembled pipeline scores raw rows; more rows beat the sample."""
    job, features, fitted, train_dd, valid_dd, train, validation, counts = _telco_splits(tmp_path)
    fit = fit_full(train_dd, valid_dd, features, fitted, train.head(50), job.seed, "roc_auc", client, counts,
                   max_rounds=400, patience=20)
    assert fit.rows == len(train) and fit.validation_rows == len(validation)
    assert fit.metric == "auc" and fit.rounds <= 400 and fit.booster.num_boosted_rounds() == fit.rounds
    assert fit.best_score == max(fit.history) and fit.history.index(fit.best_score) == fit.rounds - 1
    assert fit.params["scale_pos_weight"] == pytest.approx(counts["train"][0] / counts["train"][1])
    assert "nthread" not in fit.params  # each worker trains with its own threads
    # the sample's configuration as it is (a max_bin other than XGBoost's 256 used to crash the fit)
    assert (fit.params["max_bin"], fit.params["max_cat_to_onehot"], fit.params["max_depth"]) == (64, 8, 3)
    model = full_data_model(fit)
    p = model.predict_proba(validation[features])[:, 1]
    from sklearn.metrics import roc_auc_score

    full_auc = roc_auc_score(validation[LABEL_COLUMN], p)
    assert abs(full_auc - fit.best_score) < 0.01  # xgboost's distributed AUC, on the same rows
    assert full_auc > roc_auc_score(validation[LABEL_COLUMN], fitted.predict_proba(validation[features])[:, 1])


def _interaction_splits(tmp_path) -> tuple:
    """Telco's rows with a label that only trees deeper than a stump can learn (an exclusive or of
    tenure and monthly charges, 10 % of labels flipped), and a stump (depth 1) as the sample's choice."""
    job, features, _, _, _, train, validation, _ = _telco_splits(tmp_path)
    rng = np.random.default_rng(0)
    for frame in (train, validation):
        xor = (frame["tenure"] > 30) ^ (frame["MonthlyCharges"] > 70)
        frame[LABEL_COLUMN] = (xor ^ (rng.random(len(frame)) < 0.1)).astype(int)
    sample = train.sample(500, random_state=0)
    stump = build_pipeline(job.table, "xgboost", "class_weight", job.seed).set_params(
        model__max_depth=1, model__n_estimators=20, model__max_bin=64, model__max_cat_to_onehot=8
    ).fit(sample[features], sample[LABEL_COLUMN])
    counts = {"train": train[LABEL_COLUMN].value_counts().to_dict(),
              "validation": validation[LABEL_COLUMN].value_counts().to_dict()}
    return (job, features, stump, dd.from_pandas(train, npartitions=6), dd.from_pandas(validation, npartitions=3),
            train, counts)


def test_the_depth_ladder_deepens_a_stump_that_cannot_learn_an_interaction(client, tmp_path):
    """The sample chose stumps; on a subset of about half the train rows, depth 1 then 3 (which learns
    the exclusive or) are fitted, a rung that gains nothing ends the climb, and the full fit on every row
    uses the best rung's depth. With the subset as large as the split, the best rung is the model."""
    job, features, stump, train_dd, valid_dd, train, counts = _interaction_splits(tmp_path)
    fit = fit_full(train_dd, valid_dd, features, stump, train.head(50), job.seed, "roc_auc", client, counts,
                   max_rounds=200, patience=10, ladder_rows=len(train) // 2)
    depths = [r.max_depth for r in fit.ladder]
    assert depths[:2] == [1, 3] and fit.ladder[1].score > fit.ladder[0].score + 0.05  # a stump cannot learn it
    kept = max(fit.ladder, key=lambda r: r.score)
    assert fit.params["max_depth"] == kept.max_depth >= 3
    assert 0.3 * len(train) < fit.ladder_rows < 0.7 * len(train) and fit.rows == len(train)
    assert f"depth {kept.max_depth} kept" in fit.ladder_line and f"on {fit.ladder_rows:,} train rows" in fit.ladder_line
    assert fit.booster.num_boosted_rounds() == fit.rounds  # the full fit's own rounds

    whole = fit_full(train_dd, valid_dd, features, stump, train.head(50), job.seed, "roc_auc", client, counts,
                     max_rounds=200, patience=10, ladder_rows=10 * len(train))
    best = max(whole.ladder, key=lambda r: r.score)
    assert whole.ladder_rows == whole.rows == len(train)
    assert (whole.rounds, whole.best_score, whole.params["max_depth"]) == (best.rounds, best.score, best.max_depth)


def test_the_ladder_climbs_while_each_rung_gains_and_stops_at_the_first_that_does_not():
    """climb's rule on given scores: log loss is better lower; the depth cap and the rung cap hold."""
    def fits(scores):
        return lambda depth: (Rung(depth, scores[depth], 10, 1.0), f"model-{depth}")

    auc = {3: 0.80, 5: 0.81, 7: 0.8103, 9: 0.83}
    tried, best, model = climb(fits(auc), 3, step=2, max_depth=10, rungs=4, metric="auc", min_gain=0.0005)
    assert [r.max_depth for r in tried] == [3, 5, 7] and (best.max_depth, model) == (5, "model-5")
    loss = {3: 0.50, 5: 0.45, 7: 0.40}
    tried, best, _ = climb(fits(loss), 3, step=2, max_depth=6, rungs=4, metric="logloss", min_gain=0.0005)
    assert [r.max_depth for r in tried] == [3, 5] and best.max_depth == 5  # 7 is above the depth cap
    tried, best, _ = climb(fits(loss), 3, step=2, max_depth=10, rungs=2, metric="logloss", min_gain=0.0005)
    assert [r.max_depth for r in tried] == [3, 5] and best.max_depth == 5  # two rungs at most


def test_the_full_data_encoder_keeps_the_levels_every_train_row_supports(client):
    """A 300-level column, 40 rows a level: the sample's encoder (500 rows, a level needs 5) keeps
    only a few levels, as numeric codes; refitted on the level counts of every row, counted on the
    workers, it keeps each level with >= churn.full-data.min-level-rows rows (here 30), as native
    categories, and its level set equals an encoder fitted on the gathered rows."""
    import dask
    from sklearn.pipeline import Pipeline

    from churn.modeling.features import CategoryEncoder

    rng = np.random.default_rng(0)
    levels = [f"h{i:03d}" for i in range(300)]
    frame = pd.DataFrame({"handset": np.repeat(levels, 40), "x": rng.normal(size=12_000)})
    frame = frame.sample(frac=1, random_state=0)
    frame.loc[frame.index[:25], "handset"] = "rare"  # 25 rows: under the bar, becomes the other level
    frame.loc[frame.index[25:40], "handset"] = None  # blanks stay missing, never a level
    sample = frame.sample(500, random_state=0)
    pre = Pipeline([("encode", CategoryEncoder(categorical=["handset"]).fit(sample[["handset", "x"]]))])
    with dask.config.set({"churn.full-data.min-level-rows": 30}):
        wide, kept = widened(pre, dd.from_pandas(frame, npartitions=7), ["handset", "x"])
    enc = wide.named_steps["encode"]
    assert kept["handset"][0] == len(pre.named_steps["encode"].levels_["handset"]) < 64
    # 40 rows a level, less the rows overwritten: every level keeps its own code but not "rare"
    counts = frame["handset"].value_counts()
    expected = sorted(str(v) for v, n in counts.items() if n >= 30)
    assert enc.levels_["handset"] == expected and kept["handset"][1] == len(expected) > 250 and "rare" not in expected
    gathered = CategoryEncoder(categorical=["handset"], max_levels=4096, min_count=30, max_native_levels=4096)
    assert gathered.fit(frame[["handset", "x"]]).levels_ == enc.levels_  # fit_counts == fit on the same rows
    out = wide.transform(frame[["handset", "x"]])
    assert isinstance(out["handset"].dtype, pd.CategoricalDtype)  # split natively by XGBoost
    assert out["handset"].isna().sum() == 15 and (out["handset"] == CategoryEncoder.OTHER).sum() == 25
    # the memory check counts a category cell as its code, not the column's level names over again
    with_label = frame.head(100).assign(**{LABEL_COLUMN: 0})
    row_bytes, columns = bytes_per_row(wide, ["handset", "x"], with_label)
    assert columns == 2 and row_bytes <= 2 + 8 + 4 + 8  # int16 code, float32 x stored as float32 + label + index


def test_without_a_tracker_section_xgboost_picks_and_churn_sets_the_timeout():
    """A cluster kind without an xgboost section (local, address, ssh): XGBoost's own tracker host and
    port, the collective timeout from churn.full-data.collective-timeout (10m)."""
    coll = collective_config(None)
    assert (coll.tracker_host_ip, coll.tracker_port, coll.timeout) == (None, None, 600)


def test_memory_check_names_the_size_and_what_to_add(client):
    """A fit larger than the workers' memory limits is refused before anything is persisted, in one line."""
    need = memory_needed(50_000_000, 40, 200.0)
    assert need == 50_000_000 * 40 * 4 * 2 + 50_000_000 * 200
    with pytest.raises(FullDataMemoryError) as err:
        check_memory(client, 50_000_000, 40, 200.0)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("the full-data fit needs about 24.2 GiB of worker memory (50,000,000 rows x 40 features")
    # two workers of 3 GiB, 80 % usable: 4.8 GiB; 19.4 GiB more needs 9 more such workers, or 15.1 GiB each
    assert "the 2 workers may use 4.8 GiB (80% of their memory limits): add 9 worker(s) of 3.0 GiB, or give " \
           "each worker 15.1 GiB" in msg
    assert check_memory(client, 100_000, 40, 200.0) == memory_needed(100_000, 40, 200.0)


@pytest.mark.cluster
def test_a_worker_killed_during_the_fit_ends_in_one_line(tmp_path):
    """SIGKILL one of three `dask worker` process groups while xgboost.dask trains: the fit stops
    within seconds with one line naming the lost worker, and returns no booster."""
    job, features, fitted, train_dd, valid_dd, train, _, counts = _telco_splits(tmp_path)
    started = threading.Event()

    class _Started(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("full-data fit: ") and "rows on" in record.getMessage():
                started.set()

    handler = _Started()
    logger = logging.getLogger("churn.modeling.full_data")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    out: dict = {}
    try:
        with dask_processes(tmp_path, 3) as (address, workers), Client(address) as client:
            client.wait_for_workers(3, timeout=60)

            def fit() -> None:
                try:  # eta tiny and no early stopping: thousands of rounds, far longer than the test waits
                    out["fit"] = fit_full(train_dd, valid_dd, features, fitted, train.head(50), job.seed, "roc_auc",
                                          client, counts, max_rounds=20_000, patience=20_000)
                except FullDataFitError as exc:
                    out["error"] = exc

            runner = threading.Thread(target=fit)
            runner.start()
            assert started.wait(120)
            time.sleep(1.0)  # well into the boosting rounds
            os.killpg(workers[0].pid, signal.SIGKILL)
            killed = time.monotonic()
            runner.join(timeout=120)
            assert not runner.is_alive()
            stopped_after = time.monotonic() - killed
    finally:
        logger.removeHandler(handler)
    assert "fit" not in out
    msg = str(out["error"])
    assert "\n" not in msg
    assert msg.startswith("the full-data fit lost 1 of its 3 workers (tcp://127.0.0.1:")
    assert "no model came out of it" in msg
    assert stopped_after < 15
