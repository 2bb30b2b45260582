"""Scale benchmark: the train job on the large telecom shape, against the Bayes limit of its test rows.

Generates ``churn generate --shape telecom-large`` CSVs (default 2.1 GB, ~18M rows), then runs
``jobs/train-telecom-large.yaml`` once per cluster, each in a fresh driver process:

- ``2w``: a LocalCluster of 2 workers x 1 thread, ``--memory-2w`` each (default 8GiB);
- ``4w``: 4 workers x 1 thread, each limited to less memory than the CSV's size (``--memory-4w``,
  default 85 % of it, never under 1 GiB: at small sizes the floor wins and the table says so).

Per run and model: test ROC AUC, PR AUC and Brier, rows fitted, wall per stage
(``TrainResult.seconds``), peak RSS per worker and in the driver, worker restarts. The Bayes limit
is the same metrics of the true probabilities (``truth.parquet``) of exactly the test rows: each
id is hashed and assigned to its split as the train job does (:func:`churn.data.split.assign_split`),
row group by row group, and the count is checked against the run's test rows.

    python -m bench.scale [--gb 2.1] [--files 16] [--clusters 2w,4w] [--set KEY=VALUE ...]

Writes bench/results/scale.md (or scale-<N>gb.md for other sizes).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BASE_ENV, bench_logging, mb, write_table

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "train-telecom-large.yaml"
BYTES_PER_ROW = 118  # generated telecom-large rows, measured
WORK = ROOT / "build" / "bench" / "scale"


def ensure_data(gb: float, files: int, seed: int = 2026) -> Path:
    """The generated folder for ``gb`` GB of CSV (reused when its summary matches)."""
    from churn.data.telecom import generate_telecom

    folder = ROOT / "build" / "bench" / f"telecom-large-{gb:g}gb"
    rows = max(1, int(gb * 1e9 / BYTES_PER_ROW))
    marker = folder / "expected.json"
    if marker.exists():
        exp = json.loads(marker.read_text())
        if (exp.get("rows"), exp.get("files"), exp.get("seed")) == (rows, files, seed):
            return folder
    shutil.rmtree(folder, ignore_errors=True)
    t = time.perf_counter()
    generate_telecom(folder, rows=rows, files=files, seed=seed)
    size = sum(p.stat().st_size for p in folder.glob("*.csv"))
    wall = time.perf_counter() - t
    logging.info("generated %d rows, %.2f GB in %.0fs (%.0f MB/s)", rows, size / 1e9, wall, size / wall / 1e6)
    return folder


def bayes_limit(truth: Path, split: Any, seed: int) -> dict[str, float]:
    """ROC AUC, PR AUC and Brier of the true probabilities of the test rows, as the job splits them."""
    import pyarrow.parquet as pq
    from sklearn.metrics import average_precision_score, roc_auc_score

    from churn.data.hashing import hash_text
    from churn.data.split import assign_split

    file = pq.ParquetFile(truth)
    ys, ps = [], []
    for g in range(file.num_row_groups):  # one generator chunk at a time: flat memory but the test rows' y, p
        part = file.read_row_group(g)
        test = assign_split(hash_text(part.column("customer_id")), split, seed) == "test"
        ys.append(part.column("churn").to_numpy()[test])
        ps.append(part.column("p_true").to_numpy()[test])
    y, p = np.concatenate(ys), np.concatenate(ps)
    return {"roc_auc": float(roc_auc_score(y, p)), "pr_auc": float(average_precision_score(y, p)),
            "brier": float(np.mean((p - y) ** 2)), "rows": len(y)}


ONE_RUN = """
import json, os, resource, sys, time
from pathlib import Path
from bench.common import worker_usage
from churn.clusters import cluster_client
from churn.config import LocalClusterSpec, load_job
from churn.jobs.train import run

args = json.loads(sys.argv[1])
job = load_job(args["job"], args["overrides"])
spec = LocalClusterSpec(n_workers=args["workers"], threads_per_worker=1, memory_limit=args["memory"],
                        dashboard_address=None)
with cluster_client(spec) as client:
    before = worker_usage(client)
    t0 = time.perf_counter()
    result = run(job, client)
    wall = time.perf_counter() - t0
    after = worker_usage(client)
    logs = client.get_worker_logs()
restarts = len(set(before) ^ set(after)) + sum(before[w]["pid"] != after[w]["pid"] for w in before if w in after)
restarts += sum(1 for lines in logs.values() for _, line in lines if "restart" in line.lower())
models = [{"model": f"search champion ({result.champion.name})", "rows_fitted": result.rows["search"],
           **{k: result.test.metrics[k] for k in ("roc_auc", "pr_auc", "brier")}}]
registered = models[0]["model"] if result.rows["final"] == result.rows["search"] else "its refit on train + test"
if result.full_data is not None:  # both candidates scored on the test split by the job (report only)
    both = result.test_by_model
    models = [{"model": f"200k-sample champion ({result.champion.name})", "rows_fitted": result.rows["search"],
               **{k: both["sample champion"].metrics[k] for k in ("roc_auc", "pr_auc", "brier")}},
              {"model": "full-data xgboost", "rows_fitted": result.full_data.full_rows,
               **{k: both["full-data xgboost"].metrics[k] for k in ("roc_auc", "pr_auc", "brier")}}]
    registered = models[1 if result.full_data.winner == "full-data" else 0]["model"]
print(json.dumps({"wall": wall, "seconds": result.seconds, "rows": result.rows, "models": models,
                  "registered": registered, "choice": result.full_data.line if result.full_data else "",
                  "ladder": result.full_data.ladder if result.full_data else "",
                  "workers_peak_rss": sorted(u["peak_rss"] for u in after.values()),
                  "driver_peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "restarts": int(restarts)}))
"""


def run_train(csv: Path, workers: int, memory: str | int, name: str, sets: list[str]) -> dict[str, Any]:
    """The train job on a fresh LocalCluster, in a fresh driver process (its peak RSS is this run's)."""
    out = WORK / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    overrides = [f"data.source={csv / '*.csv'}", f"data.output={out / 'datasets'}",
                 f"tracking.uri=sqlite:///{out / 'mlflow.db'}", *sets]
    args = {"job": str(JOB), "overrides": overrides, "workers": workers, "memory": memory}
    log_file = out / "driver.log"  # written as the run goes (follow it with tail -f)
    with log_file.open("w") as err:
        proc = subprocess.run([sys.executable, "-c", ONE_RUN, json.dumps(args)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=err, text=True, env={**BASE_ENV, "PYTHONHASHSEED": "0"}, timeout=6 * 3600)
    if proc.returncode != 0:
        lines = [ln for ln in log_file.read_text().strip().splitlines() if ln.strip()]
        raise RuntimeError(f"train on {name} failed (log in {out / 'driver.log'}): {lines[-1] if lines else ''}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=2.1)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--clusters", default="2w,4w", help="which of 2w (2 workers), 4w (4 workers) to run")
    ap.add_argument("--memory-2w", default="8GiB")
    ap.add_argument("--memory-4w", default=None, help="per worker; default 85 %% of the CSV's size, >= 1 GiB")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="job override, e.g. model.families=[...]")
    args = ap.parse_args()
    bench_logging()
    from churn.config import SplitSpec, load_job

    folder = ensure_data(args.gb, args.files)
    size = sum(p.stat().st_size for p in folder.glob("*.csv"))
    job = load_job(JOB, [f"data.source={folder / '*.csv'}", *args.sets])
    # test rows depend on split.test and the seed alone (not on the validation fraction)
    bayes = bayes_limit(folder / "truth.parquet", SplitSpec(test=job.split.test, validation=0.0), job.seed)
    logging.info("Bayes limit on %d test rows: %s", bayes["rows"], bayes)
    memory_4w = args.memory_4w or max(int(0.85 * size), 1 << 30)
    clusters = {"2w": (2, args.memory_2w), "4w": (4, memory_4w)}
    table, notes = [], []
    for name in args.clusters.split(","):
        workers, memory = clusters[name]
        limit = memory if isinstance(memory, str) else f"{memory / 2**30:.2f}GiB"
        cluster = f"{workers} workers x {limit}"
        try:
            r = run_train(folder, workers, memory, name, args.sets)
        except RuntimeError as exc:  # reported in the table, and the other clusters still run
            logging.error("%s", exc)
            table.append([cluster, f"run failed: {str(exc)[:300]}", *["-"] * 8])
            _write(args, folder, size, bayes, table, notes)
            continue
        logging.info("%s: %s", name, r)
        if r["rows"].get("test") != bayes["rows"]:
            raise RuntimeError(f"the run's test split has {r['rows'].get('test')} rows, the truth's {bayes['rows']}: "
                               "the Bayes limit would not be of the same rows")
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items())
        rss = f"{' / '.join(mb(x) for x in r['workers_peak_rss'])} (driver {mb(r['driver_peak_rss'])})"
        for m in r["models"]:
            table.append([cluster, m["model"] + (" **registered**" if m["model"] == r["registered"] else ""),
                          f"{m['roc_auc']:.4f}", f"{m['pr_auc']:.4f}", f"{m['brier']:.4f}",
                          f"{bayes['roc_auc'] - m['roc_auc']:.4f}", f"{m['rows_fitted']:,}", stages, rss,
                          r["restarts"]])
        table.append([cluster, "Bayes limit (true probabilities)", f"{bayes['roc_auc']:.4f}",
                      f"{bayes['pr_auc']:.4f}", f"{bayes['brier']:.4f}", "0", "-", "-", "-", "-"])
        notes.append(f"{cluster}: rows {r['rows']}; wall {r['wall']:.0f}s in all; registered: {r['registered']}.")
        if len(r["models"]) == 2:  # the sample champion, then the full-data model
            sample, full = r["models"][0]["roc_auc"], r["models"][1]["roc_auc"]
            closed = (full - sample) / (bayes["roc_auc"] - sample)
            notes.append(f"{cluster}: the full-data model closes {closed:.0%} of "
                         f"the sample champion's gap to the Bayes AUC; full-data stage "
                         f"{r['seconds'].get('full-data', 0):.0f} s; choice: {r['choice']}; depth ladder: "
                         f"{r.get('ladder') or 'none'}.")
        if workers == 4 and not (isinstance(memory, int) and memory < size):
            notes.append(f"{cluster}: at this size the 1 GiB floor is not below the CSV's {size / 1e9:.2f} GB.")
        _write(args, folder, size, bayes, table, notes)  # after each cluster: a stopped run keeps the ones done


def _write(args: argparse.Namespace, folder: Path, size: int, bayes: dict[str, float], table: list[list[Any]],
           run_notes: list[str]) -> None:
    notes = [
        *run_notes,
        f"Input: {args.files} CSV files of `churn generate --shape telecom-large`, {size / 1e9:.3g} GB, "
        f"{json.loads((folder / 'expected.json').read_text())['rows']:,} rows; job {JOB.relative_to(ROOT)}"
        + (f" with {', '.join(args.sets)}" if args.sets else "") + ".",
        f"Bayes limit: the true probabilities (truth.parquet) of the {bayes['rows']:,} test rows, the ids hashed "
        "to their split as the job does; the run's test-row count is checked equal.",
        "Wall s per stage from TrainResult.seconds; peak RSS from each worker's and the driver's getrusage "
        "high-water mark (the driver is a fresh process per run); restarts = worker processes replaced or "
        "restart lines in the worker logs.",
        "Gap closed = (full-data test ROC AUC - sample champion's) / (Bayes AUC - sample champion's), on the "
        "same test rows. The full-data stage's seconds include its depth ladder (churn.modeling.full_data.climb).",
    ]
    write_table("scale" if args.gb == 2.1 else f"scale-{args.gb:g}gb", f"Scale benchmark ({size / 1e9:.3g} GB of CSV)",
                ["cluster", "model", "test ROC AUC", "PR AUC", "Brier", "gap to Bayes AUC", "rows fitted",
                 "wall s per stage", "peak RSS MB per worker", "worker restarts"], table, notes)


if __name__ == "__main__":
    main()
