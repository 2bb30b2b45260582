"""Model quality: the default job against untuned scikit-learn defaults and AutoGluon, on every bundled table.

The protocol of issue 9: split each raw CSV 75/25 (stratified on the label, ``random_state``
0, 1 and 2), train the default ``jobs/train.yaml`` *by configuration* on the 75 % (the table's
data and schema sections, the default job's model, search and evaluation sections), and score
the other 25 % with ``models:/customer-churn@champion``. The baselines are fitted on the same
75 %: ``HistGradientBoostingClassifier(random_state=0)`` behind an ``OrdinalEncoder`` for the
categorical columns, and ``LogisticRegression(max_iter=2000)`` with one-hot, mean imputation
and scaling. Nothing is tuned on the 25 %.

AutoGluon (issue 25) runs in its own venv (``make bench-quality`` builds ``.venv-autogluon``; it is
not a dependency of churn) as a subprocess, ``bench/autogluon_fit.py``: ``TabularPredictor(label,
eval_metric="roc_auc").fit(train, presets="best_quality", time_limit=T, num_cpus=2)`` on the same
75 % rows, typed as the baselines see them, where T is the wall time churn's job took on that
split; it scores the same 25 %.

    python -m bench.quality [--seeds 0 1 2] [--tables telco mlc] [--autogluon-python PATH]

Writes bench/results/quality.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
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

from bench.common import BASE_ENV, bench_logging, write_table
from churn.clusters import cluster_client
from churn.config import JobSpec, LocalClusterSpec
from churn.jobs.train import run
from churn.tracking.registry import load_churn_model

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"telco": ROOT / "jobs" / "train.yaml", "mlc": ROOT / "jobs" / "train-mlc.yaml"}
DEFAULT_JOB = ROOT / "jobs" / "train.yaml"
AUTOGLUON_PYTHON = ROOT / ".venv-autogluon" / "bin" / "python"
AUTOGLUON_FIT = Path(__file__).resolve().parent / "autogluon_fit.py"
AUTOGLUON = "AutoGluon best_quality"
NUM_CPUS = 2  # the machine's cores, and the 2 workers of churn's LocalCluster


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


def autogluon(python: Path, X_train: pd.DataFrame, y_train: np.ndarray, X_test: pd.DataFrame, label: str,
              time_limit: float, work: Path) -> dict[str, Any]:
    """Fit AutoGluon best_quality on the train rows in a subprocess of its own venv; the test-row
    probabilities, the wall time of its ``fit`` and the models it fitted."""
    train = X_train.assign(**{label: y_train})
    train.to_parquet(work / "ag-train.parquet")
    X_test.to_parquet(work / "ag-test.parquet")
    log = work / "autogluon.log"
    cmd = [str(python), str(AUTOGLUON_FIT), "--train", str(work / "ag-train.parquet"),
           "--test", str(work / "ag-test.parquet"), "--label", label, "--time-limit", f"{time_limit:.1f}",
           "--num-cpus", str(NUM_CPUS), "--path", str(work / "autogluon"), "--verbosity", "2"]
    t = time.perf_counter()
    with log.open("w") as err:
        # The environment the bench started with: the LocalCluster's nannies have since set
        # OMP_NUM_THREADS=1 in this process, which would throttle AutoGluon's GBMs.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=BASE_ENV,
                              timeout=3 * time_limit + 600)
    if proc.returncode != 0:
        raise RuntimeError(f"AutoGluon failed (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = time.perf_counter() - t
    if len(out["proba"]) != len(X_test):
        raise RuntimeError(f"AutoGluon returned {len(out['proba'])} probabilities for {len(X_test)} test rows")
    return out


def split_table(spec_path: Path, seed: int) -> tuple[str, pd.DataFrame, pd.DataFrame]:
    """The table's label column and its raw rows split 75/25, stratified on the label (``seed``)."""
    probe = yaml.safe_load(spec_path.read_text())
    raw = pd.read_csv(ROOT / probe["data"]["source"], dtype=str, keep_default_na=False)
    label = probe["schema"]["label"]
    train, test = train_test_split(raw, test_size=0.25, stratify=raw[label], random_state=seed)
    return label, train, test


def one_split(name: str, spec_path: Path, seed: int, client: Any, ag_python: Path | None,
              ag_seconds: float | None) -> list[dict[str, Any]]:
    label, train, test = split_table(spec_path, seed)
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
        if ag_python is not None:
            budget = seconds if ag_seconds is None else ag_seconds
            ag = autogluon(ag_python, X_train, y_train, X_test, label, budget, work)
            rows.append({"table": name, "seed": seed, "method": AUTOGLUON, "seconds": ag["fit_seconds"],
                         "budget": budget, "predict_seconds": ag["predict_seconds"],
                         "process_seconds": ag["process_seconds"], "best": ag["best"], "models": ag["models"],
                         "families": ag["families"], "versions": ag["versions"],
                         **metrics(y_test, np.asarray(ag["proba"]))})
        logging.info("%s seed %d: %s", name, seed, {r["method"]: round(r["roc_auc"], 4) for r in rows})
    return rows


def fmt(r: Any) -> list[str]:
    return [f"{r['roc_auc']:.4f}", f"{r['pr_auc']:.4f}", f"{r['brier']:.4f}", f"{r['log_loss']:.4f}",
            f"{r['seconds']:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tables", nargs="+", default=list(TABLES), choices=list(TABLES))
    parser.add_argument("--autogluon-python", type=Path, default=AUTOGLUON_PYTHON,
                        help="python of the AutoGluon venv (make bench-quality builds .venv-autogluon)")
    parser.add_argument("--no-autogluon", action="store_true", help="leave the AutoGluon row out")
    parser.add_argument("--autogluon-seconds", type=float, default=None,
                        help="smoke tests only: AutoGluon's time limit instead of churn's job time")
    args = parser.parse_args()
    ag_python = None if args.no_autogluon else args.autogluon_python
    if ag_python is not None and not ag_python.exists():
        raise SystemExit(f"no AutoGluon python at {ag_python}: `make bench-quality` builds .venv-autogluon, "
                         "or pass --autogluon-python PATH or --no-autogluon")
    bench_logging()
    rows: list[dict[str, Any]] = []
    with cluster_client(LocalClusterSpec()) as client:
        # split by split across the tables, the table rewritten after each: a run cut short
        # leaves every table's splits so far, and says how many (the 'mean of N' rows)
        for seed in args.seeds:
            for name in args.tables:
                rows += one_split(name, TABLES[name], seed, client, ag_python, args.autogluon_seconds)
                report(rows, args)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Write bench/results/quality.md from the splits measured so far."""
    frame = pd.DataFrame(rows)
    methods = list(dict.fromkeys(frame["method"]))
    means = frame.groupby(["table", "method"], sort=False)[["roc_auc", "pr_auc", "brier", "log_loss", "seconds"]].mean()
    table_rows, notes, margins = [], [], []
    floors = {"telco": 0.8515, "mlc": 0.9313}  # churn's means before issue 25 (bench/results/quality.md, 2026-11-25)
    for name in [t for t in args.tables if t in set(frame["table"])]:
        m = means.loc[name]
        splits = sorted(frame[frame.table == name]["seed"].unique())
        for method in methods:
            table_rows.append([name, f"mean of {len(splits)}", method, *fmt(m.loc[method])])
        for r in frame[frame.table == name].itertuples():
            table_rows.append([name, f"split {r.seed}", r.method, *fmt(r._asdict())])
        base = m.loc[[k for k in m.index if k.startswith("default ")]]
        better = base["roc_auc"].idxmax()
        ours = m.loc["churn default job"]
        margin = ours["roc_auc"] - base["roc_auc"].max()
        margins.append(margin)
        ok_auc = ours["roc_auc"] >= base["roc_auc"].max()
        ok_brier = ours["brier"] <= base["brier"].min()
        notes.append(f"{name}: better untuned default by ROC AUC is {better}; churn's margin {margin:+.4f} ROC AUC "
                     f"({'meets' if ok_auc else 'misses'} >= better default), Brier {ours['brier']:.4f} vs best "
                     f"default {base['brier'].min():.4f} ({'meets' if ok_brier else 'misses'} <=).")
        if AUTOGLUON in m.index:
            ag = m.loc[AUTOGLUON]
            notes.append(
                f"{name}: churn vs AutoGluon at equal time, mean of the splits: ROC AUC {ours['roc_auc']:.4f} vs "
                f"{ag['roc_auc']:.4f} ({ours['roc_auc'] - ag['roc_auc']:+.4f}; "
                f"{'meets' if ours['roc_auc'] >= ag['roc_auc'] else 'misses'} >=), Brier {ours['brier']:.4f} vs "
                f"{ag['brier']:.4f} ({'meets' if ours['brier'] <= ag['brier'] else 'misses'} <=).")
        if name in floors and len(splits) == 3:
            notes.append(f"{name}: churn's mean ROC AUC {ours['roc_auc']:.4f} vs its figure before issue 25 "
                         f"{floors[name]:.4f} ({'holds' if ours['roc_auc'] >= floors[name] else 'loses ground'}).")
        for r in frame[(frame.table == name) & (frame.method == "churn default job")].itertuples():
            notes.append(f"{name} split {r.seed}: churn's champion {r.champion}; calibration {r.calibration}; "
                         f"feature sums {r.sums}.")
        for r in frame[(frame.table == name) & (frame.method == AUTOGLUON)].itertuples():
            notes.append(f"{name} split {r.seed}: AutoGluon time_limit {r.budget:.1f}s, fit took {r.seconds:.1f}s, "
                         f"predict_proba on the 25 % {r.predict_seconds:.1f}s, whole subprocess "
                         f"{r.process_seconds:.1f}s; {int(r.models)} models ({', '.join(r.families)}), best {r.best}.")
    notes.append(f"Mean margin of churn over the better untuned default, averaged over the tables: "
                 f"{np.mean(margins):+.4f} ROC AUC (target >= +0.005).")
    notes.append(f"Protocol: {__doc__.split('    python')[0].strip()}".replace("\n", " "))
    done = sorted(int(x) for x in frame["seed"].unique())
    notes.append(f"Splits (seeds) {done} of {args.seeds}; 'mean' rows average the splits. "
                 "seconds = fit wall time: the baselines' fit, "
                 "churn's whole job (ingest, search, calibration, evaluation, finalising, tracking) on a 2-worker "
                 "LocalCluster, AutoGluon's TabularPredictor.fit (its time_limit is churn's job time on the same "
                 "split; its predict time and process start are in the notes above). Every row, churn's included, is "
                 "measured in this run with this commit's code; none is carried over from an earlier table.")
    if AUTOGLUON in methods:
        versions = frame[frame.method == AUTOGLUON].iloc[0]["versions"]
        budget = ("churn's job seconds on the same split" if args.autogluon_seconds is None
                  else f"fixed at {args.autogluon_seconds:.0f}s (a smoke run, not equal time)")
        notes.append(
            "AutoGluon: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + f" in .venv-autogluon; time_limit "
            f"{budget}; num_cpus={NUM_CPUS}, num_gpus=0; best_quality = zeroshot portfolio, 8-fold bagging, "
            "DyStack. Installed as autogluon.tabular[lightgbm,catboost,xgboost]: without torch its NN_TORCH and "
            "FASTAI portfolio members are skipped (PyPI's torch brings the CUDA stack), and without ray folds "
            "are fitted one after another (2 threads each) and DyStack runs in-process.")
    write_table("quality", "Model quality: the default job vs untuned scikit-learn defaults and AutoGluon",
                ["table", "split", "method", "ROC AUC", "PR AUC", "Brier", "log loss", "seconds"], table_rows, notes)


if __name__ == "__main__":
    main()
