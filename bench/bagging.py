"""Bagged fold models against refit members: the bench-quality protocol (issue 9) with
``model.bagging`` false and true on the same split and the same search.

For each table and seed: the raw CSV split 75/25 as ``bench.quality`` splits it; the default job
trained on the 75 % with ``model.bagging: true`` (the search runs, the members' fold models are
cached), then again with ``false`` (the same search, reused from the cache: the refit members,
refitted on every labelled row by ``finalize``); each registered version scores the 25 %. Also
shown: what ``auto`` chooses and its CV figure (two fold models averaged against one).

    python -m bench.bagging [--seeds 0 1 2] [--tables telco mlc]

Writes bench/results/bagging.md.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from bench.common import bench_logging, write_table
from bench.quality import ROOT, TABLES, metrics, split_table, table_job, typed
from churn.clusters import cluster_client
from churn.config import JobSpec, LocalClusterSpec
from churn.jobs.train import run
from churn.tracking.registry import load_churn_model


def one_split(name: str, spec_path: Path, seed: int, client: Any) -> list[dict[str, Any]]:
    label, train, test = split_table(spec_path, seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / f"{name}-train.csv"
        train.to_csv(source, index=False)
        base = table_job(spec_path, source, work).as_dict()
        base["search"]["reuse"] = True  # the second run reuses the first one's search
        for bagging in (True, False):
            spec = {**base, "model": {**base["model"], "bagging": bagging}}
            job = JobSpec.model_validate(spec)
            y_test = (test[label] == job.table.positive).astype(int).to_numpy()
            result = run(job, client)
            mlflow.set_tracking_uri(job.tracking.uri)
            p = load_churn_model(result.model_uri).pipeline.predict_proba(typed(test, job))[:, 1]
            auto = result.bagging
            rows.append({"table": name, "seed": seed, "bagging": bagging, "champion": result.champion.name,
                         "members": ",".join(result.champion.members), "cv": result.champion.cv_score,
                         "auto_gain": auto.gain, "final_rows": result.rows["final"],
                         "calibration": result.champion.calibration.method, **metrics(y_test, p),
                         # the stages that differ: bagging scores k fold models where finalize refits one
                         "after_search_s": sum(v for k, v in result.seconds.items()
                                               if k not in ("ingest", "split", "preflight", "search"))})
            logging.info("%s seed %d bagging %s: %s", name, seed, bagging, rows[-1])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    args = parser.parse_args()
    bench_logging()
    rows: list[dict[str, Any]] = []
    (ROOT / "build").mkdir(exist_ok=True)
    with cluster_client(LocalClusterSpec()) as client:
        for name in args.tables:
            for seed in args.seeds:
                rows += one_split(name, TABLES[name], seed, client)
                pd.DataFrame(rows).to_csv(ROOT / "build" / "bench-bagging.csv", index=False)
    frame = pd.DataFrame(rows)
    table_rows = [[r.table, r.seed, "bagged" if r.bagging else "refit + finalize", r.members, f"{r.cv:.4f}",
                   f"{r.roc_auc:.4f}", f"{r.pr_auc:.4f}", f"{r.brier:.4f}", f"{r.log_loss:.4f}", f"{r.final_rows:,}",
                   f"{r.after_search_s:.1f}"]
                  for r in frame.itertuples()]
    means = frame.groupby(["table", "bagging"])[["roc_auc", "pr_auc", "brier", "log_loss"]].mean()
    notes = [f"{t} mean over seeds {args.seeds}: bagged ROC AUC {means.loc[(t, True), 'roc_auc']:.4f}, Brier "
             f"{means.loc[(t, True), 'brier']:.4f}; refit ROC AUC {means.loc[(t, False), 'roc_auc']:.4f}, Brier "
             f"{means.loc[(t, False), 'brier']:.4f}." for t in args.tables]
    gains = frame[frame.bagging].set_index(["table", "seed"])["auto_gain"]
    notes.append("auto's CV figure (two fold models averaged against one, mean over the members, roc_auc): "
                 + "; ".join(f"{t} seed {s} {g:+.4f}" for (t, s), g in gains.items()))
    notes.append("s after the search: wall seconds of the stages after the search (calibration, evaluation, "
                 "finalize, tracking): a bagged model scores with k fold models per member where a refit one "
                 "is refitted by finalize; the search itself runs once per split (the second run reuses it).")
    notes.append(f"Protocol: {__doc__.split('    python')[0].strip()}".replace("\n", " "))
    write_table("bagging", "Bagged fold models vs refit members (bench-quality protocol)",
                ["table", "seed", "served", "champion members", "CV roc_auc", "ROC AUC", "PR AUC", "Brier", "log loss",
                 "rows fitted", "s after the search"], table_rows, notes)


if __name__ == "__main__":
    main()
