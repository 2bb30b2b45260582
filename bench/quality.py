"""Model quality: the default job against untuned scikit-learn defaults, on every bundled table.

The protocol of issue 9: split each raw CSV 75/25 (stratified on the label, ``random_state``
0, 1 and 2), train the default ``jobs/train.yaml`` *by configuration* on the 75 % (the table's
data and schema sections, the default job's model, search and evaluation sections), and score
the other 25 % with ``models:/customer-churn@champion``. The baselines are fitted on the same
75 %: ``HistGradientBoostingClassifier(random_state=0)`` behind an ``OrdinalEncoder`` for the
categorical columns, and ``LogisticRegression(max_iter=2000)`` with one-hot, mean imputation
and scaling. Nothing is tuned on the 25 %.

    python -m bench.quality [--seeds 0 1 2] [--tables telco mlc]

Writes bench/results/quality.md.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from bench.common import bench_logging, write_table
from churn.clusters import cluster_client
from churn.config import JobSpec, LocalClusterSpec
from churn.jobs.train import run
from churn.tracking.registry import load_churn_model

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"telco": ROOT / "jobs" / "train.yaml", "mlc": ROOT / "jobs" / "train-mlc.yaml"}
DEFAULT_JOB = ROOT / "jobs" / "train.yaml"


def table_job(table_spec: Path, source: Path, work: Path) -> JobSpec:
    """The default job with the table's data and schema sections (configuration only)."""
    default = yaml.safe_load(DEFAULT_JOB.read_text())
    table = yaml.safe_load(table_spec.read_text())
    spec = {**default, "name": f"quality-{table_spec.stem}", "schema": table["schema"],
            "data": {**table["data"], "source": str(source), "output": str(work / "datasets")},
            "tracking": {**default["tracking"], "uri": f"sqlite:///{work / 'mlflow.db'}"},
            "search": {**default.get("search", {}), "reuse": False}}  # timed: every run searches
    return JobSpec.model_validate(spec)


def typed(frame: pd.DataFrame, job: JobSpec) -> pd.DataFrame:
    """The feature columns as a user would read them: numbers parsed (blanks → NaN), text as text."""
    out = frame[job.table.features].copy()
    for col in job.table.numeric:
        out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in job.table.categorical:
        out[col] = out[col].astype(str)
    return out


def baselines(job: JobSpec) -> dict[str, Any]:
    num, cat = list(job.table.numeric), list(job.table.categorical)
    hgb = Pipeline([("enc", ColumnTransformer([("cat", OrdinalEncoder(handle_unknown="use_encoded_value",
                                                                      unknown_value=-1), cat)],
                                              remainder="passthrough")),
                    ("model", HistGradientBoostingClassifier(random_state=0))])
    lr = Pipeline([("enc", ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="mean")), ("scale", StandardScaler())]), num),
        ("cat", OneHotEncoder(handle_unknown="ignore"), cat)])),
        ("model", LogisticRegression(max_iter=2000))])
    return {"default HGB": hgb, "default LogReg": lr}


def metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"roc_auc": roc_auc_score(y, p), "pr_auc": average_precision_score(y, p),
            "brier": brier_score_loss(y, p), "log_loss": log_loss(y, np.clip(p, 1e-15, 1 - 1e-15))}


def one_split(name: str, spec_path: Path, seed: int, client: Any) -> list[dict[str, Any]]:
    probe = yaml.safe_load(spec_path.read_text())
    raw = pd.read_csv(ROOT / probe["data"]["source"], dtype=str, keep_default_na=False)
    label = probe["schema"]["label"]
    train, test = train_test_split(raw, test_size=0.25, stratify=raw[label], random_state=seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / f"{name}-train.csv"
        train.to_csv(source, index=False)
        job = table_job(spec_path, source, work)
        y_train = (train[label] == job.table.positive).astype(int).to_numpy()
        y_test = (test[label] == job.table.positive).astype(int).to_numpy()
        X_train, X_test = typed(train, job), typed(test, job)
        for method, model in baselines(job).items():
            t = time.perf_counter()
            p = model.fit(X_train, y_train).predict_proba(X_test)[:, 1]
            rows.append({"table": name, "seed": seed, "method": method, "seconds": time.perf_counter() - t,
                         **metrics(y_test, p)})
        t = time.perf_counter()
        result = run(job, client)
        seconds = time.perf_counter() - t
        mlflow.set_tracking_uri(job.tracking.uri)
        pipeline = load_churn_model(result.model_uri).pipeline
        p = pipeline.predict_proba(X_test)[:, 1]
        champ = result.champion
        won = f"{champ.name}: " + ", ".join(f"{f} ({result.families[f].imbalance})" for f in champ.members)
        sums = mlflow.get_run(result.run_id).data.params.get("feature_sums", "none")
        rows.append({"table": name, "seed": seed, "method": "churn default job", "seconds": seconds,
                     "champion": won, "calibration": champ.calibration.method, "sums": sums, **metrics(y_test, p)})
        logging.info("%s seed %d: %s", name, seed, {r["method"]: round(r["roc_auc"], 4) for r in rows})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    args = parser.parse_args()
    bench_logging()
    rows: list[dict[str, Any]] = []
    with cluster_client(LocalClusterSpec()) as client:
        for name in args.tables:
            for seed in args.seeds:
                rows += one_split(name, TABLES[name], seed, client)
    frame = pd.DataFrame(rows)
    means = frame.groupby(["table", "method"], sort=False)[["roc_auc", "pr_auc", "brier", "log_loss", "seconds"]].mean()
    table_rows, notes, margins = [], [], []
    for name in args.tables:
        m = means.loc[name]
        base = m.drop(index="churn default job")
        better = base["roc_auc"].idxmax()
        ours = m.loc["churn default job"]
        margin = ours["roc_auc"] - base["roc_auc"].max()
        margins.append(margin)
        for method, r in m.iterrows():
            table_rows.append([name, method, f"{r['roc_auc']:.4f}", f"{r['pr_auc']:.4f}", f"{r['brier']:.4f}",
                               f"{r['log_loss']:.4f}", f"{r['seconds']:.1f}"])
        ok_auc = ours["roc_auc"] >= base["roc_auc"].max()
        ok_brier = ours["brier"] <= base["brier"].min()
        notes.append(f"{name}: better baseline by ROC AUC is {better}; churn's margin {margin:+.4f} ROC AUC "
                     f"({'meets' if ok_auc else 'misses'} >= better baseline), Brier {ours['brier']:.4f} vs best "
                     f"baseline {base['brier'].min():.4f} ({'meets' if ok_brier else 'misses'} <=).")
        ours_rows = frame[(frame.table == name) & (frame.method == "churn default job")]
        for r in ours_rows.itertuples():
            notes.append(f"{name} seed {r.seed}: champion {r.champion}; calibration {r.calibration}; "
                         f"feature sums {r.sums}; ROC AUC {r.roc_auc:.4f}, Brier {r.brier:.4f}, job {r.seconds:.0f}s.")
    notes.append(f"Mean margin over the better baseline, averaged over the tables: {np.mean(margins):+.4f} ROC AUC "
                 f"(target >= +0.005).")
    notes.append(f"Protocol: {__doc__.split('    python')[0].strip()}".replace("\n", " "))
    notes.append(f"Seeds {args.seeds}; metrics are means over the seeds; seconds = fit (baselines) or whole job "
                 "(churn: ingest, search, calibration, evaluation, finalising, tracking) on a 2-worker LocalCluster.")
    write_table("quality", "Model quality: the default job vs untuned scikit-learn defaults",
                ["table", "method", "ROC AUC", "PR AUC", "Brier", "log loss", "seconds"], table_rows, notes)


if __name__ == "__main__":
    main()
