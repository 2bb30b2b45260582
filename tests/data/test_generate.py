"""Synthetic data: reproducible bytes, a learnable label, a Telco-like churn rate."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from churn.data.generate import COLUMNS, generate


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*"))}


def test_same_seed_gives_identical_bytes(tmp_path):
    """Two runs with one seed write the same bytes; another seed writes other bytes."""
    generate(tmp_path / "a", rows=12_345, files=3, seed=7, dirty=0.02)
    generate(tmp_path / "b", rows=12_345, files=3, seed=7, dirty=0.02)
    generate(tmp_path / "c", rows=12_345, files=3, seed=8, dirty=0.02)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a")["churn-0000.csv"] != _digest(tmp_path / "c")["churn-0000.csv"]


def test_label_is_learnable_and_rate_is_telco_like(tmp_path):
    """About 26 % churn, and a plain logistic regression beats chance by a wide margin."""
    res = generate(tmp_path, rows=60_000, files=2, seed=3)
    frame = pd.concat(pd.read_csv(f, dtype=str, keep_default_na=False) for f in res.files)
    assert list(frame.columns) == COLUMNS
    y = (frame["Churn"] == "Yes").to_numpy(int)
    assert 0.22 < y.mean() < 0.30
    X = pd.get_dummies(frame[["Contract", "InternetService", "PaymentMethod", "TechSupport"]]).astype(float)
    X["tenure"] = frame["tenure"].astype(float)
    X["MonthlyCharges"] = frame["MonthlyCharges"].astype(float)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0)
    auc = roc_auc_score(yte, LogisticRegression(max_iter=1000).fit(Xtr, ytr).predict_proba(Xte)[:, 1])
    assert auc > 0.75


def test_dirty_counts_are_written_and_add_up(tmp_path):
    """expected.json names every fault kind; kept + quarantined + duplicates = rows."""
    res = generate(tmp_path, rows=20_000, files=2, seed=1, dirty=0.035)
    exp = json.loads((tmp_path / "expected.json").read_text())
    assert exp == res.expected
    assert all(v > 0 for v in exp["faults"].values())
    assert exp["rows_kept"] + exp["rows_quarantined"] + exp["duplicates_removed"] == 20_000
    assert sum(exp["faults"].values()) == round(0.035 * 20_000)
    raw = np.concatenate([np.frombuffer(f.read_bytes(), np.uint8) for f in res.files])
    assert int((raw == 10).sum()) == 20_000 + 2  # one line per row plus a header per file
