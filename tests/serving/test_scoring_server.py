"""`churn serve`: MLflow's scoring server as a real process, with the table's rules in front."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import pandas as pd
import pytest

from churn.jobs.train import run
from tests.conftest import job_spec
from tests.servers import http_process


@pytest.fixture(scope="module")
def served(client, tmp_path_factory, telco_subset):
    """A small registered model served by `churn serve` on 127.0.0.1; (url, rows, fitted pipeline)."""
    tmp = tmp_path_factory.mktemp("serve")
    job = job_spec(tmp, telco_subset, "search.cv=2", "model.families=[logistic_regression]",
                   "evaluation.plots=false")
    result = run(job, client)
    rows = pd.read_csv(telco_subset, na_values=[" "]).head(3).drop(columns=["customerID", "Churn"])
    with http_process([sys.executable, "-m", "churn.cli", "serve", "--tracking-uri",
                       f"sqlite:///{tmp / 'mlflow.db'}", "--port", "{port}"], "/ping", cwd=tmp) as url:
        yield url, rows, result.model


def _post(url: str, body: bytes) -> tuple[int, str]:
    req = urllib.request.Request(url + "/invocations", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _frame(rows: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()


def test_valid_rows_are_scored_like_the_pipeline(served):
    """Three Telco rows: HTTP 200, the pipeline's probabilities and the 0/1 decision."""
    url, rows, model = served
    status, body = _post(url, _frame(rows))
    assert status == 200, body
    out = pd.DataFrame(json.loads(body)["predictions"])
    assert list(out.columns) == ["probability", "decision"]
    assert (abs(out["probability"] - model.predict_proba(rows)[:, 1]) < 1e-9).all()


@pytest.mark.parametrize("change, message", [
    ({"Contract": "Ten year"}, "Contract='Ten year' is not one of"),
    ({"tenure": -5}, "tenure=-5 is below the minimum 0"),
    ({"SeniorCitizen": 3}, "SeniorCitizen=3 is above the maximum 1"),
    ({"PaymentMethod": None}, "PaymentMethod=None is blank"),
])
def test_a_row_ingest_would_quarantine_gets_400_naming_column_and_value(served, change, message):
    """Out-of-domain categories, out-of-range numbers, blanks: 400 with the column and value, no score."""
    url, rows, _ = served
    bad = rows.copy()
    for col, value in change.items():
        bad[col] = bad[col].astype(object)
        bad.loc[1, col] = value
    status, body = _post(url, _frame(bad))
    assert status == 400, body
    assert f"row 1: {message}" in json.loads(body)["message"]


def test_malformed_requests_get_4xx_never_500(served):
    """A missing column, a wrong type, broken JSON, an empty body: client errors, each with a message."""
    url, rows, _ = served
    cases = [_frame(rows.drop(columns=["tenure"])), _frame(rows.assign(tenure=["a", "b", "c"])),
             b'{"dataframe_split": {"columns": [', b""]
    for body in cases:
        status, text = _post(url, body)
        assert 400 <= status < 500, (status, text[:300])
        assert text.strip()
