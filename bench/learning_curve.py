"""Learning curve of the large telecom shape: does the signal keep paying for more rows?

One fixed XGBoost configuration (below, ``PARAMS``) is trained on 50k, 200k, 1M, 4M and 12M rows
of ``churn generate --shape telecom-large`` (drawn in memory, chunk by chunk, with the
generator's own functions; no CSV), stops early on one fixed validation slice, and is scored on
one fixed test set, against the Bayes limit of the same test rows (their true probabilities).

    python -m bench.learning_curve [--sizes 50000,200000,...] [--test-rows 1000000] [--nthread 2]

Writes bench/results/learning_curve.md, .png and .json after each size, so a run stopped early
keeps the sizes it reached; ``--append`` adds sizes to the saved ones (same test set).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import pandas as pd

from bench.common import RESULTS, bench_logging, write_table
from churn.data import telecom

# the fixed configuration: plain xgboost, hist, native categoricals (partition splits)
PARAMS = {"objective": "binary:logistic", "eval_metric": "logloss", "tree_method": "hist", "max_depth": 6,
          "eta": 0.15, "min_child_weight": 1.0, "max_bin": 256, "max_cat_to_onehot": 1, "max_cat_threshold": 64}
MAX_ROUNDS, EARLY_STOP = 2000, 20
TRAIN_SEED, VALID_SEED, TEST_SEED = 1, 2, 3  # three disjoint draws from the same world
VALID_ROWS = 200_000


def draw(seed: int, rows: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``rows`` rows of the large shape: (features, true probability, label), as the generator draws them."""
    frames, ps, ys = [], [], []
    for index, lo in enumerate(range(0, rows, telecom.CHUNK_ROWS)):
        f, p, y = telecom.chunk(seed, index, lo, min(telecom.CHUNK_ROWS, rows - lo))
        frames.append(telecom.frame(f))
        ps.append(p)
        ys.append(y)
    return pd.concat(frames, ignore_index=True), np.concatenate(ps), np.concatenate(ys).astype(np.int8)


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((p - y) ** 2))


def plot(done: list[dict[str, float]], bayes: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot([d["rows"] for d in done], [d["auc"] for d in done], "o-", label="xgboost (fixed configuration)")
    ax.axhline(bayes, color="k", ls="--", label=f"Bayes limit (true probabilities) {bayes:.4f}")
    ax.axvline(200_000, color="grey", ls=":", label="search.max_rows (200k)")
    ax.set_xscale("log")
    ax.set_xlabel("training rows (log scale)")
    ax.set_ylabel("test ROC AUC")
    ax.set_title("Learning curve, telecom-large shape (same 1M-row test set)" if done else "")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "learning_curve.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="50000,200000,1000000,4000000,12000000")
    ap.add_argument("--test-rows", type=int, default=1_000_000)
    ap.add_argument("--nthread", type=int, default=2)
    ap.add_argument("--append", action="store_true",
                    help="keep the sizes of bench/results/learning_curve.json (same test set) and add these")
    args = ap.parse_args()
    bench_logging()
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    X_test, p_test, y_test = draw(TEST_SEED, args.test_rows)
    X_valid, _, y_valid = draw(VALID_SEED, VALID_ROWS)
    bayes_auc, bayes_brier = float(roc_auc_score(y_test, p_test)), brier(y_test, p_test)
    logging.info("Bayes limit on %d test rows: ROC AUC %.4f, Brier %.4f", len(y_test), bayes_auc, bayes_brier)
    params = {**PARAMS, "nthread": args.nthread}
    d_test = xgb.DMatrix(X_test, enable_categorical=True, nthread=args.nthread)
    d_valid = xgb.DMatrix(X_valid, y_valid, enable_categorical=True, nthread=args.nthread)
    saved = RESULTS / "learning_curve.json"
    done: list[dict[str, float]] = json.loads(saved.read_text()) if args.append and saved.exists() else []
    for rows in (int(s) for s in args.sizes.split(",")):
        X, _, y = draw(TRAIN_SEED, rows)
        t0 = time.perf_counter()
        d_train = xgb.DMatrix(X, y, enable_categorical=True, nthread=args.nthread)
        booster = xgb.train(params, d_train, MAX_ROUNDS, evals=[(d_valid, "valid")],
                            early_stopping_rounds=EARLY_STOP, verbose_eval=False)
        fit = time.perf_counter() - t0
        score = booster.predict(d_test, iteration_range=(0, booster.best_iteration + 1))
        done.append({"rows": rows, "auc": float(roc_auc_score(y_test, score)), "brier": brier(y_test, score),
                     "rounds": booster.best_iteration + 1, "fit": fit})
        del X, y, d_train, booster
        logging.info("%d rows: %s", rows, done[-1])
        done.sort(key=lambda d: d["rows"])
        saved.write_text(json.dumps(done, indent=1) + "\n")
        table = [[f"{d['rows']:,}", f"{d['auc']:.4f}", f"{d['brier']:.4f}", f"{bayes_auc:.4f}",
                  f"{bayes_auc - d['auc']:.4f}", f"{(bayes_auc - d['auc']) / (bayes_auc - done[0]['auc']):.0%}"
                  if bayes_auc > done[0]["auc"] else "-", int(d["rounds"]), f"{d['fit']:.0f}"] for d in done]
        notes = [
            f"Configuration (fixed for every size): xgboost {xgb.__version__} `train` with {params}; at most "
            f"{MAX_ROUNDS} rounds, early stopping after {EARLY_STOP} rounds without a better log loss on a fixed "
            f"validation slice of {VALID_ROWS:,} rows (seed {VALID_SEED}); the rounds kept are the best ones.",
            f"Data: the telecom-large shape of `churn generate` (churn/data/telecom.py), drawn in memory: training "
            f"rows with seed {TRAIN_SEED} (a size that is a multiple of {telecom.CHUNK_ROWS:,} rows is a prefix of "
            f"every larger one), one test set of {len(y_test):,} rows "
            f"(seed {TEST_SEED}, churn rate {y_test.mean():.3f}).",
            f"Bayes limit: ROC AUC {bayes_auc:.4f} and Brier {bayes_brier:.4f} of the true probabilities of the same "
            "test rows. Gap = Bayes AUC - test AUC; 'gap left' is the gap as a share of the smallest size's.",
            "Fit s = DMatrix build + boosting, wall on a machine shared with other jobs (run under nice), so "
            "only roughly comparable across sizes.",
        ]
        write_table("learning_curve", "Learning curve: fixed xgboost on the telecom-large shape",
                    ["train rows", "test ROC AUC", "Brier", "Bayes AUC", "gap to Bayes", "gap left", "rounds",
                     "fit s"], table, notes)
        plot(done, bayes_auc)


if __name__ == "__main__":
    main()
