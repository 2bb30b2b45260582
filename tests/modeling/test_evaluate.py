"""Evaluation: metrics equal hand-computed values, the profit threshold finds the known optimum."""

from __future__ import annotations

import math

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix

from churn.config import EconomicsSpec
from churn.modeling.evaluate import (
    contact_profit,
    evaluate,
    f1_threshold,
    lift_table,
    precision_at_top,
    profit_threshold,
)
from churn.modeling.summary import summarise_on_cluster


class CountedLogisticRegression(LogisticRegression):
    """Counts how often the driver process serializes it."""

    pickled: list[int] = []

    def __reduce__(self):
        CountedLogisticRegression.pickled.append(1)
        return super().__reduce__()


def test_metrics_equal_hand_computed_values():
    """Six rows, three churners, one tie across the classes: each metric worked out by hand."""
    y = np.array([1, 0, 1, 1, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.4, 0.4, 0.2])
    ev = evaluate(y, p, 0.5, top_k=[0.2, 0.5])
    m = ev.metrics
    # ROC AUC: share of the 3 x 3 (churner, stayer) pairs ranked right, a tie counting 1/2:
    # 0.9 beats 0.8, 0.4, 0.2 (3); 0.6 beats 0.4, 0.2 (2); 0.4 ties 0.4, beats 0.2 (1.5): 6.5 / 9
    assert m["roc_auc"] == pytest.approx(6.5 / 9, abs=1e-12)
    # average precision: sum over the distinct cuts of (recall step) x precision, tied rows cut together:
    # >=0.9: P 1, R 1/3; >=0.8: P 1/2, R 1/3; >=0.6: P 2/3, R 2/3; >=0.4: P 3/5, R 1
    # = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 34/45
    assert m["pr_auc"] == pytest.approx(34 / 45, abs=1e-12)
    # Brier: (0.1^2 + 0.8^2 + 0.4^2 + 0.6^2 + 0.4^2 + 0.2^2) / 6 = 1.37 / 6
    assert m["brier"] == pytest.approx(1.37 / 6, abs=1e-12)
    # log loss: -(ln 0.9 + ln 0.2 + ln 0.6 + ln 0.4 + ln 0.6 + ln 0.8) / 6; the product is 0.020736 = 0.144^2
    assert m["log_loss"] == pytest.approx(-math.log(0.144) / 3, abs=1e-12)
    # top 20 %: round(1.2) = 1 row, a churner; top 50 %: 3 rows (0.9, 0.8, 0.6), 2 churners
    assert m["precision_at_20pct"] == 1.0
    assert m["precision_at_50pct"] == pytest.approx(2 / 3, abs=1e-12)
    # at 0.5 the top three are contacted: stayers 2 kept, 1 contacted; churners 1 missed, 2 contacted
    assert ev.confusion == [[2, 1], [1, 2]]
    assert (m["contacted_fraction"], m["positive_rate"], m["rows"]) == (0.5, 0.5, 6.0)


def test_lift_gains_and_precision_at_top():
    """Perfect scores: top decile is all churners; gains reach 1; precision at top is exact."""
    y = np.array([1] * 20 + [0] * 80)
    p = np.linspace(1, 0, 100)
    lift = lift_table(y, p)
    assert lift.loc[0, "churn_rate"] == 1.0 and lift.loc[0, "lift"] == 5.0
    assert lift["cumulative_gain"].iloc[-1] == 1.0
    assert lift.loc[1, "cumulative_gain"] == 1.0
    assert precision_at_top(y, p, 0.1) == 1.0
    assert precision_at_top(y, p, 0.4) == 0.5


def test_profit_threshold_finds_the_known_optimum():
    """Contacting exactly the rows whose expected gain is positive is optimal, and is found."""
    econ = EconomicsSpec(customer_value=100, offer_cost=10, contact_cost=1, acceptance_rate=0.5)
    # gain per churner: 0.5*(100-10)-1 = 44; per stayer: -0.5*10-1 = -6
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([.95, .9, .85, .8, .7, .6, .5, .4, .3, .2, .1, .05])
    thr, profit = profit_threshold(y, p, econ)
    assert thr == 0.8  # contact the top four: 44+44-6+44 = 126; any other cut earns less
    assert profit == 126
    assert contact_profit(y, econ)[p >= thr].sum() == 126
    # nobody worth contacting: threshold above every score
    thr0, profit0 = profit_threshold(np.zeros(5, int), np.linspace(0.1, 0.9, 5), econ)
    assert thr0 > 0.9 and profit0 == 0


def test_f1_threshold_and_report_at_threshold():
    """The F1 threshold separates perfectly separable scores; the report uses the given cut."""
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7])
    assert f1_threshold(y, p) == 0.6
    ev = evaluate(y, p, 0.65, f1_cut=0.6)
    assert ev.confusion == [[3, 0], [1, 1]]
    assert ev.metrics["f1_at_f1_threshold"] == 1.0


def test_the_model_goes_to_each_worker_once(client):
    """Summarising 20 partitions on 2 workers serializes the model at most once per worker, not per task."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"a": rng.normal(size=2000)})
    frame["_label"] = (frame["a"] > 0).astype("int8")
    model = CountedLogisticRegression().fit(frame[["a"]], frame["_label"])
    CountedLogisticRegression.pickled.clear()
    summary = summarise_on_cluster(dd.from_pandas(frame, npartitions=20), model, ["a"], client, (0.5,))
    assert summary.rows == 2000 and summary.confusion(0.5) == tuple(
        confusion_matrix(frame["_label"], model.predict_proba(frame[["a"]])[:, 1] >= 0.5).ravel())
    assert 1 <= len(CountedLogisticRegression.pickled) <= len(client.scheduler_info()["workers"])
