"""Batch scoring benchmark: `churn score` on a 2-worker LocalCluster against single-process
pandas (read_csv + the same pipeline's predict_proba), on the same generated files, in one run.

    python -m bench.score [--rows 2000000]
    python -m bench.score --store sqlite:///…/mlflow.db --model models:/customer-churn@champion \
        --source 'build/bench/telecom-large-2.1gb/telecom-000[01].csv' --name score-full-data

`churn score` runs twice on the same data in the same run: plain (reasons=0) and with
``--reasons`` reason codes per row (default 3; 0 leaves that row out).
The second form scores given files with an already registered model (for example the full-data
xgboost model that `make bench-scale` registers) instead of training a small one on Telco.
Writes bench/results/score.md (or <name>.md).
"""

from __future__ import annotations

import argparse
import glob
import shutil
import time
from pathlib import Path

import pandas as pd

from bench.common import (
    bench_logging,
    median_run,
    run_isolated,
    self_usage,
    train_small_model,
    worker_usage,
    write_table,
)
from churn.clusters import cluster_client
from churn.config import LocalClusterSpec, load_score_job
from churn.data.generate import generate
from churn.jobs import score as score_job

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench" / "score"

PANDAS = """
import glob, resource, time, mlflow, pandas as pd
from churn.tracking.registry import load_churn_model
mlflow.set_tracking_uri({store!r})
def cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime
cpu0 = cpu()
t_load = time.perf_counter()
loaded = load_churn_model({uri!r})
pipeline, threshold = loaded.pipeline, loaded.threshold
t0 = time.perf_counter()
rows = 0
for f in sorted(glob.glob({pattern!r})):
    for chunk in pd.read_csv(f, chunksize=500_000, na_values=[" "]):
        p = pipeline.predict_proba(chunk)[:, 1]
        rows += len(p)
result = {{"rows": rows, "scoring": time.perf_counter() - t_load, "scoring_cpu": cpu() - cpu0}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each method; the median by wall time is shown")
    ap.add_argument("--store", help="score with a model of this registry instead of training one (with --model)")
    ap.add_argument("--model", help="registered model URI in --store")
    ap.add_argument("--source", help="CSV files to score (glob), with --store")
    ap.add_argument("--name", default="score", help="results file name under bench/results/")
    ap.add_argument("--reasons", type=int, default=3, help="reason codes per row in the with-reasons run (0: none)")
    args = ap.parse_args()
    bench_logging()
    if args.store:
        pattern = str(Path(args.source).resolve())
        what = f"the registered model {args.model} of {args.store}, on {args.source}"
    else:
        data = WORK / f"data-{args.rows}"
        if not list(data.glob("*.csv")):
            generate(data, rows=args.rows, files=4, seed=7)
        pattern = str(data / "*.csv")
        what = "the same generated Telco-shaped files and the same registered model (hist_gradient_boosting on Telco)"
    with cluster_client(LocalClusterSpec(n_workers=2, threads_per_worker=1, memory_limit="2GiB",
                                    dashboard_address=None)) as client:
        store, model_uri = (args.store, args.model) if args.store else train_small_model(WORK, client)
        sets = [f"data.source={pattern}", f"data.output={WORK / 'scores'}", f"tracking.uri={store}"]
        specs = {k: load_score_job(ROOT / "jobs" / "score.yaml", [*sets, f"reasons={k}"])
                 for k in sorted({0, args.reasons})}
        timed: dict[int, list] = {k: [] for k in specs}
        for _ in range(args.repeat):
            for k, spec in specs.items():  # interleaved, so both see the same machine
                shutil.rmtree(WORK / "scores", ignore_errors=True)
                before, driver_before = worker_usage(client), self_usage()
                t0 = time.perf_counter()
                res = score_job.run(spec, client)
                wall = time.perf_counter() - t0
                after, driver_after = worker_usage(client), self_usage()
                cpu = (sum(after[w]["cpu"] for w in after) - sum(before[w]["cpu"] for w in before if w in after)
                       + driver_after["cpu"] - driver_before["cpu"])
                timed[k].append((wall, cpu, res))
        if args.reasons:
            sample = pd.read_parquet(res.root / "data").head(5)  # the last run: with reasons
    runs = timed[0]
    with_reasons = None
    if args.reasons:
        with_reasons, reasons_spread = median_run(timed[args.reasons], lambda run: run[0],
                                                  f"churn with {args.reasons} reasons")
    (churn_wall, churn_cpu, res), churn_spread = median_run(runs, lambda run: run[0], "churn")
    spread = [churn_spread, *([reasons_spread] if with_reasons else [])]
    code = PANDAS.format(store=store, uri=model_uri, pattern=pattern)
    one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}  # as in a worker
    bases = {}
    for kind, env in (("1 thread", one_thread), ("default threads", None)):
        bases[kind], base_spread = median_run([run_isolated(code, env=env) for _ in range(args.repeat)],
                                              lambda run: run["scoring"], f"pandas with {kind}")
        spread.append(base_spread)
    size = sum(Path(f).stat().st_size for f in glob.glob(pattern))
    rows = [[f"pandas read_csv + predict_proba, 1 process, {kind}", f"{b['rows']:,}", f"{b['scoring']:.1f}",
             f"{b['rows'] / b['scoring']:,.0f}", f"{b['scoring_cpu']:.1f}", "-"] for kind, b in bases.items()]
    rows.append(["churn score, LocalCluster 2 x 1 thread", f"{res.rows_read:,}", f"{churn_wall:.1f}",
                 f"{res.rows_read / churn_wall:,.0f}", f"{churn_cpu:.1f}",
                 f"{res.rows_scored:,} scored, {res.rows_quarantined:,} quarantined"])
    notes = []
    if with_reasons:
        r_wall, r_cpu, r_res = with_reasons
        rows.append([f"churn score with {args.reasons} reason codes per row, LocalCluster 2 x 1 thread",
                     f"{r_res.rows_read:,}", f"{r_wall:.1f}", f"{r_res.rows_read / r_wall:,.0f}", f"{r_cpu:.1f}",
                     f"{r_res.rows_scored:,} scored, {r_res.rows_quarantined:,} quarantined"])
        ratio = (r_res.rows_read / r_wall) / (res.rows_read / churn_wall)
        notes.append(f"churn with reasons / plain churn rows/s: {ratio:.2f} (target >= 0.5); the two ran "
                     "interleaved on the same data in the same run (jobs/score.yaml with reasons=0 and "
                     f"reasons={args.reasons}). Reason codes: churn.serving.reasons (README, Reason codes).")
        cols = ["probability", *(c for c in sample.columns if c.startswith("reason_"))]
        notes.append("Sample rows with reasons: " + " | ".join(
            f"p={r.probability:.3f}: " + "; ".join(
                f"{r[f'reason_{i}_column']} = {r[f'reason_{i}_value']}, {r[f'reason_{i}_contribution']:+.2f}"
                for i in range(1, args.reasons + 1)) for _, r in sample[cols].iterrows()))
    ratios = {kind: (res.rows_read / churn_wall) / (b["rows"] / b["scoring"]) for kind, b in bases.items()}
    write_table(args.name, f"Batch scoring benchmark ({res.rows_read:,} rows, {size / 1e9:.2f} GB of CSV)",
                ["method", "rows", "wall s", "rows/s", "CPU s", "notes"], rows, [
                    *notes,
                    "churn / pandas rows/s (plain churn score): " + "; ".join(f"{r:.2f} against pandas with {kind}"
                                                          for kind, r in ratios.items()) + " (target >= 1.8).",
                    f"Each method ran {args.repeat} times; each row is its median run by wall time. Wall s, "
                    f"fastest-slowest: {', '.join(spread)}.",
                    "1 thread: OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS=1, as in each Dask worker "
                    "(distributed's default). Default threads: the environment the benchmark started with, "
                    "where the model's predict (HistGradientBoosting's, XGBoost's) uses OpenMP threads on every core,"
                    " so that one process already uses both cores while it predicts. Both "
                    "run with glibc's default malloc settings; churn's workers run with distributed's "
                    "MALLOC_TRIM_THRESHOLD_ and churn's cluster.worker-mmap-threshold.",
                    "CPU s = user + system seconds over the same interval as wall s: for pandas its one process; "
                    "for churn the worker processes (one thread each) plus the driver. The ratio of rows/s is bounded "
                    "by 2 x pandas CPU s / churn CPU s on 2 cores.",
                    "wall s = model load + read + score (+ for churn: scan, checks, writes), not interpreter "
                    "start-up or cluster start-up.",
                    f"Same data and model for both: {what}; pandas reads in chunks of 500,000 rows; churn also "
                    "checks every row against the "
                    "schema, quarantines what breaks it and writes Parquet scores (id, probability, decision, model "
                    "name and version, time).",
                ])


if __name__ == "__main__":
    main()
