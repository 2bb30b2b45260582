"""The model's output for a frame of rows: churn ``probability`` and the 0/1 ``decision``.

NumPy and pandas only, apart from the fitted pipeline itself: batch scoring runs this on Dask
workers, which then import neither MLflow nor skops (skops alone imports every scikit-learn
estimator to list its trusted types, seconds per worker).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def predict_frame(pipeline: Any, rows: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The model's output for ``rows``: probability of churn and the decision at ``threshold``."""
    proba = pipeline.predict_proba(rows)[:, 1]
    return pd.DataFrame({"probability": proba, "decision": (proba >= threshold).astype(np.int64)})
