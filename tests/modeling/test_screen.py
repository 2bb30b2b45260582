"""The feature-sums screen: kept when cross-validation gains from them, left out when not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from churn.config import JobSpec
from churn.modeling.screen import choose_sums

SCHEMA = {"id": None, "label": "churn", "positive": "yes", "negative": "no",
          "numeric": {"day_minutes": {}, "night_minutes": {}, "eve_minutes": {}, "age": {}},
          "categorical": {"plan": ["a", "b"]}}


def _job(mode: str | bool) -> JobSpec:
    """A job on the usage table: 3-fold CV, ROC AUC, seed 0, ``model.feature_sums`` set to ``mode``."""
    return JobSpec.model_validate({"data": {"source": "usage.csv"}, "schema": SCHEMA, "seed": 0,
                                   "search": {"cv": 3, "scoring": "roc_auc"}, "model": {"feature_sums": mode}})


def _usage(label_from_total: bool, seed: int = 0, n: int = 1500) -> tuple[pd.DataFrame, pd.Series]:
    """Three usage parts and an age; churn follows the parts' total, or the age alone."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"day_minutes": rng.uniform(0, 100, n), "night_minutes": rng.uniform(0, 100, n),
                      "eve_minutes": rng.uniform(0, 100, n), "age": rng.uniform(18, 80, n),
                      "plan": rng.choice(["a", "b"], n).astype(object)})
    driver = X[["day_minutes", "night_minutes", "eve_minutes"]].sum(axis=1) - 150 if label_from_total else X["age"] - 49
    y = pd.Series((driver + rng.normal(0, 25, n) > 0).astype(int))
    return X, y


def test_sums_kept_when_the_label_follows_the_total(client):
    """Churn driven by total minutes: the sum gains in CV, so the search gets it."""
    X, y = _usage(label_from_total=True)
    choice = choose_sums(_job("auto"), X, y, client)
    assert choice.groups == {"sum_minutes": ["day_minutes", "night_minutes", "eve_minutes"]}
    assert choice.gain > 0 and len(choice.with_sums) == 3


def test_sums_left_out_when_they_do_not_help(client):
    """Churn driven by age alone: the sum gains nothing clear, so it stays out."""
    X, y = _usage(label_from_total=False)
    choice = choose_sums(_job("auto"), X, y, client)
    assert choice.groups == {} and choice.gain is not None


@pytest.mark.parametrize("mode, kept", [(True, True), (False, False)])
def test_sums_forced_on_or_off_without_a_screen(mode, kept):
    """true and false decide without fitting anything (no cluster needed)."""
    X, y = _usage(label_from_total=False)
    choice = choose_sums(_job(mode), X, y, client=None)
    assert bool(choice.groups) is kept and choice.gain is None
