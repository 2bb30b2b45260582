"""The model's output for a frame of rows: churn ``probability`` and the 0/1 ``decision``.

NumPy and pandas only, apart from the fitted pipeline itself: batch scoring runs this on Dask
workers, which then import neither MLflow nor skops (skops alone imports every scikit-learn
estimator to list its trusted types, seconds per worker).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def predict_frame(pipeline: Any, rows: pd.DataFrame, threshold: float, reasons: int = 0) -> pd.DataFrame:
    """The model's output for ``rows``: probability of churn and the decision at ``threshold``;
    with ``reasons`` > 0, that many reason codes per row (:func:`churn.serving.reasons.top_reasons`)."""
    proba = pipeline.predict_proba(rows)[:, 1]
    out = pd.DataFrame({"probability": proba, "decision": (proba >= threshold).astype(np.int64)})
    if reasons > 0:
        from churn.serving.reasons import explain, top_reasons  # numpy and pandas only, and only when asked

        top = top_reasons(explain(pipeline, rows), rows, reasons)
        out = pd.concat([out, top.set_axis(out.index)], axis=1)
    return out
