"""One AutoGluon-Tabular fit for bench/quality.py, run by the python of the bench's own AutoGluon venv.

AutoGluon is not a dependency of churn: this file imports neither churn nor anything the churn
venv has that the AutoGluon venv lacks. It reads the train and test rows that bench/quality.py
wrote (Parquet, features typed as the baselines see them, the label as 0/1), fits

    TabularPredictor(label=LABEL, eval_metric="roc_auc").fit(train, presets="best_quality",
                                                             time_limit=T, num_cpus=N, num_gpus=0)

scores the test rows and prints one JSON line: the positive-class probabilities in test-row
order, the wall time of ``fit`` and of ``predict_proba``, the best model and the models fitted.

    python bench/autogluon_fit.py --train T.parquet --test S.parquet --label Churn \
        --time-limit 42 --num-cpus 2 --path WORKDIR
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from importlib.metadata import version

import pandas as pd
from autogluon.tabular import TabularPredictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", required=True)
    parser.add_argument("--test", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--time-limit", type=float, required=True)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--path", required=True, help="directory for AutoGluon's models")
    parser.add_argument("--verbosity", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    train = pd.read_parquet(args.train)
    test = pd.read_parquet(args.test)
    predictor = TabularPredictor(label=args.label, eval_metric="roc_auc", problem_type="binary",
                                 path=args.path, verbosity=args.verbosity)
    t = time.perf_counter()
    predictor.fit(train, presets="best_quality", time_limit=args.time_limit,
                  num_cpus=args.num_cpus, num_gpus=0)
    fit_seconds = time.perf_counter() - t
    t = time.perf_counter()
    proba = predictor.predict_proba(test.drop(columns=[args.label], errors="ignore"))
    predict_seconds = time.perf_counter() - t
    if predictor.positive_class != 1:  # the label is 0/1 and 1 is the positive class
        raise SystemExit(f"AutoGluon chose positive class {predictor.positive_class!r}, expected 1")
    models = predictor.model_names()
    print(json.dumps({
        "proba": proba[1].astype(float).tolist(),
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "best": predictor.model_best,
        "models": len(models),
        "families": sorted({m.split("_")[0] for m in models}),  # e.g. LightGBMXT_BAG_L1 -> LightGBMXT
        "versions": {p: version(p) for p in ("autogluon.tabular", "lightgbm", "catboost", "xgboost-cpu")},
    }))


if __name__ == "__main__":
    main()
