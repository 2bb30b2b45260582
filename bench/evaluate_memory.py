"""Driver memory of the test evaluation: per-partition score summaries merged on the cluster
(the train job's path) against gathering every row's label and score in the driver (the old path).

    python -m bench.evaluate_memory [--summary-rows 15000 15000000] [--gather-rows 15000 1500000]

Each measurement runs in a fresh driver process with its own LocalCluster of 2 workers x 1 thread.
The test rows are generated on the workers (``dd.from_map``, 500,000 rows a partition; never built
in the driver); the model is a ChurnClassifier of a scaled logistic regression fitted on 5,000
rows plus a sigmoid calibration map, as the train job assembles it. A thread samples the driver
process's RSS (psutil) every 2 ms from just before the evaluation to its end.

Writes bench/results/evaluate.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from bench.common import bench_logging, mb, run_isolated, write_table

log = logging.getLogger("bench.evaluate_memory")

PART_ROWS = 500_000
FEATURES = ["a", "b", "c"]

MEASURE = """
import json, sys
sys.argv = ["bench", {method!r}, {rows!r}]
from bench.evaluate_memory import measure
result = measure({method!r}, {rows!r})
"""


def _part(i: int, rows: int, seed: int = 7):
    """Partition ``i`` of the test rows: three features and a label drawn from a known logistic."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, i])
    X = rng.normal(size=(rows, 3))
    z = X @ np.array([1.2, -0.7, 0.3]) - 1.3
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["_label"] = (rng.random(rows) < 1 / (1 + np.exp(-z))).astype("int8")
    return frame


def _model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from churn.serving.calibration import ChurnClassifier, ScoreCalibrator

    fit = _part(10_000, 5_000)
    member = make_pipeline(StandardScaler(), LogisticRegression()).fit(fit[FEATURES], fit["_label"])
    calibrator = ScoreCalibrator("sigmoid", (True,)).fit(member.predict_proba(fit[FEATURES])[:, 1:], fit["_label"])
    return ChurnClassifier([member], calibrator, ["logistic_regression"])


def _test_rows(rows: int):
    import dask.dataframe as dd

    sizes = [PART_ROWS] * (rows // PART_ROWS) + ([rows % PART_ROWS] if rows % PART_ROWS else [])
    return dd.from_map(_part, range(len(sizes)), sizes, enforce_metadata=False)


def _gather_partition(frame, model, features):
    """The old path's partition task: labels and each member's raw score."""
    import pandas as pd

    scores = model.scores(frame[features])
    return pd.DataFrame({"y": frame["_label"].to_numpy("int8"),
                         **{f"s{j}": scores[:, j] for j in range(scores.shape[1])}})


def _evaluate_gathered(ddf, model, client, threshold: float) -> dict[str, float]:
    """The old path: every row's label and member scores gathered in the driver, the calibration
    map there, then scikit-learn's metrics on the arrays (as ``evaluate`` did)."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import (
        average_precision_score,
        brier_score_loss,
        classification_report,
        confusion_matrix,
        log_loss,
        roc_auc_score,
    )

    from churn.clusters.scatter import scatter
    from churn.modeling.evaluate import lift_table, precision_at_top

    [model_f] = scatter(client, [model], broadcast=True)
    futures = [client.submit(_gather_partition, part, model_f, FEATURES, pure=False)
               for part in client.compute(ddf.to_delayed())]
    both = pd.concat(client.gather(futures), ignore_index=True)
    y, s = both["y"].to_numpy(np.int8).astype(int), both.drop(columns="y").to_numpy(np.float64)
    p = model.calibrator.predict(s)
    order = np.argsort(-p, kind="stable")
    pred = (p >= threshold).astype(int)
    classification_report(y, pred, digits=4, zero_division=0)
    confusion_matrix(y, pred, labels=[0, 1])
    lift_table(y[order], p[order])
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
            "brier": float(brier_score_loss(y, p)), "log_loss": float(log_loss(y, p)),
            "precision_at_10pct": precision_at_top(y[order], p[order], 0.1), "rows": float(len(y))}


def _evaluate_summarised(ddf, model, client, threshold: float) -> dict[str, float]:
    """The train job's path: summaries per partition (calibrated and raw), merged on the cluster."""
    from churn.modeling.evaluate import evaluation_from
    from churn.modeling.summary import summaries_on_cluster

    summaries = summaries_on_cluster(ddf, model, FEATURES, client, (threshold,), raw=True)
    m = evaluation_from(summaries["proba"], threshold).metrics
    m["summary_bytes"] = float(summaries["proba"].nbytes + summaries["raw"].nbytes)
    return m


def _warm() -> None:
    import sklearn.linear_model  # noqa: F401
    import sklearn.metrics  # noqa: F401

    import churn.modeling.evaluate  # noqa: F401
    import churn.modeling.summary  # noqa: F401
    import churn.serving.calibration  # noqa: F401


def measure(method: str, rows: int) -> dict[str, float]:
    """Run one evaluation of ``rows`` test rows by ``method`` (summary or gather); the driver's RSS
    before it and its peak during it, and the wall time."""
    import os
    import threading
    import time

    import psutil

    from churn.clusters import cluster_client
    from churn.config import LocalClusterSpec

    logging.getLogger("distributed").setLevel(logging.ERROR)
    spec = LocalClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="6GiB", dashboard_address=None)
    me = psutil.Process(os.getpid())
    with cluster_client(spec) as client:
        model, ddf = _model(), _test_rows(rows)
        client.run(_warm)  # connections up and libraries imported on the workers before the baseline
        _warm()
        before = me.memory_info().rss
        peak, done = [before], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], me.memory_info().rss)
                time.sleep(0.002)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        run = _evaluate_summarised if method == "summary" else _evaluate_gathered
        metrics = run(ddf, model, client, 0.5)
        wall = time.perf_counter() - t0
        done.set()
        sampler.join()
        peak[0] = max(peak[0], me.memory_info().rss)
    return {**metrics, "rss_before": before, "rss_peak": peak[0], "eval_wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--summary-rows", type=int, nargs="+", default=[15_000, 1_500_000, 15_000_000])
    ap.add_argument("--gather-rows", type=int, nargs="+", default=[15_000, 1_500_000])
    args = ap.parse_args()
    bench_logging()
    runs = [("summary", n) for n in args.summary_rows] + [("gather", n) for n in args.gather_rows]
    table, results = [], {}
    for method, rows in runs:
        log.info("%s path, %s rows", method, f"{rows:,}")
        r = run_isolated(MEASURE.format(method=method, rows=rows), timeout=3600)
        results[(method, rows)] = r
        log.info("%s", json.dumps(r))
        label = ("summaries merged on the cluster (train job)" if method == "summary"
                 else "every row gathered in the driver (old path)")
        table.append([label, f"{rows:,}", mb(r["rss_before"]), mb(r["rss_peak"]),
                      mb(r["rss_peak"] - r["rss_before"]), f"{r['eval_wall']:.1f}", f"{r['roc_auc']:.5f}",
                      f"{r['roc_auc_error_bound']:.1e}" if "roc_auc_error_bound" in r else "exact",
                      f"{r['brier']:.5f}"])
    small = [r for (m, n), r in results.items() if m == "summary" and n == min(args.summary_rows)]
    large = [r for (m, n), r in results.items() if m == "summary" and n == max(args.summary_rows)]
    notes = [
        "driver RSS before: the driver process's resident memory just before the evaluation starts (cluster up, "
        "model fitted, test rows defined lazily). Peak during: the largest RSS a psutil thread sampled every 2 ms "
        "from then to the end of the evaluation (metrics in hand). Growth: peak - before, what the evaluation "
        "itself costs the driver.",
        "eval wall s: from the start of scoring to the metrics in the driver, both workers scoring "
        f"(partitions of {PART_ROWS:,} rows generated on the workers by dd.from_map, never in the driver).",
        "model: a ChurnClassifier of StandardScaler + LogisticRegression fitted on 5,000 rows and a sigmoid "
        "calibration map; the summary path summarises the calibrated probability and the member's raw probability "
        "in one pass (as the train job does for its calibration plot), at one threshold.",
        "ROC AUC bound: the summary's stated error bound (half the share of positive-negative pairs sharing a "
        "histogram bin of more than one score); the old path's ROC AUC is scikit-learn's, exact.",
        "Each measurement runs in a fresh Python process with its own LocalCluster of 2 workers x 1 thread.",
    ]
    if small and large:
        notes.append(f"summary path: driver growth {mb(small[0]['rss_peak'] - small[0]['rss_before'])} MB at "
                     f"{min(args.summary_rows):,} rows vs {mb(large[0]['rss_peak'] - large[0]['rss_before'])} MB at "
                     f"{max(args.summary_rows):,} rows; peak {mb(large[0]['rss_peak'])} MB (target: no more than at "
                     f"15k within noise, peak < 1 GB). Summaries (calibrated + raw) hold "
                     f"{mb(large[0]['summary_bytes'])} MB of arrays whatever the rows.")
    write_table("evaluate", "Driver memory of the test evaluation", [
        "path", "test rows", "driver RSS before MB", "driver peak RSS MB", "growth MB", "eval wall s", "ROC AUC",
        "ROC AUC bound", "Brier"], table, notes)


if __name__ == "__main__":
    sys.exit(main())
