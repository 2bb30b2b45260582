"""The private scikit-learn functions behind churn.modeling.compat still do what churn needs.

If one of these fails after a scikit-learn upgrade, fix churn/modeling/compat.py first.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from churn.modeling import compat


def test_safe_indexing_cuts_frames_series_and_arrays():
    """Rows by position, index kept, for a DataFrame, a Series and an array."""
    frame = pd.DataFrame({"a": [1, 2, 3, 4]}, index=[10, 11, 12, 13])
    rows = np.array([3, 1])
    assert compat.safe_indexing(frame, rows).index.tolist() == [13, 11]
    assert compat.safe_indexing(frame["a"], rows).tolist() == [4, 2]
    np.testing.assert_array_equal(compat.safe_indexing(np.arange(4) * 2, rows), [6, 2])


def test_forest_checked_X_feeds_trees_exactly_as_predict_proba_does():
    """Averaging the trees on the checked input gives the forest's own predict_proba."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 3)), columns=list("abc"))
    y = (X["a"] > 0).astype(int)
    forest = RandomForestClassifier(n_estimators=7, random_state=0).fit(X, y)
    checked = compat.forest_checked_X(forest, X)
    mean = np.mean([t.predict_proba(checked, check_input=False) for t in forest.estimators_], axis=0)
    np.testing.assert_allclose(mean, forest.predict_proba(X), rtol=0, atol=1e-12)


def test_validate_params_refuses_a_bad_value_without_fitting():
    """A negative C is refused by the estimator's own constraints; a good one passes."""
    compat.validate_params(LogisticRegression(C=1.0))
    with pytest.raises(ValueError, match="'C' parameter of LogisticRegression"):
        compat.validate_params(LogisticRegression(C=-1.0))


def test_scorer_response_method_names_what_each_scorer_calls():
    """Brier and log loss need probabilities; ROC AUC takes a decision function first."""
    assert compat.scorer_response_method("neg_brier_score") == "predict_proba"
    assert compat.scorer_response_method("neg_log_loss") == "predict_proba"
    assert "decision_function" in compat.scorer_response_method("roc_auc")
