"""`churn serve`: MLflow's scoring app in churn's middleware as a real process, with the table's rules
in front. One server for the whole module (it costs a train and a start); every request through
:func:`_post` also checks that an error body is churn's message alone."""

from __future__ import annotations

import http.client
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.models import Model, ModelSignature
from mlflow.pyfunc import scoring_server
from mlflow.types.schema import ColSpec, Schema
from starlette.testclient import TestClient
from typer.testing import CliRunner

from churn.cli.app import app
from churn.jobs.train import run
from churn.serving.reasons import explain, reason_columns, top_reasons
from churn.serving.server import build_app
from tests.conftest import job_spec
from tests.servers import http_process

MAX_BODY = 64 * 1024  # the served process's churn.serve.max-body (set through the environment)
ERROR_KEYS = {"error_code", "message", "problems"}


@pytest.fixture(scope="module")
def served(client, tmp_path_factory, telco_subset):
    """A small registered model served by `churn serve` on 127.0.0.1; (url, rows, fitted pipeline,
    version, store)."""
    tmp = tmp_path_factory.mktemp("serve")
    job = job_spec(tmp, telco_subset, "search.cv=2", "model.families=[logistic_regression]",
                   "evaluation.plots=false")
    result = run(job, client)
    rows = pd.read_csv(telco_subset, na_values=[" "]).head(3).drop(columns=["customerID", "Churn"])
    store = f"sqlite:///{tmp / 'mlflow.db'}"
    with http_process([sys.executable, "-m", "churn.cli", "serve", "--tracking-uri", store, "--port", "{port}"],
                      "/ping", cwd=tmp, env={"DASK_CHURN__SERVE__MAX_BODY": str(MAX_BODY)}) as url:
        yield url, rows, result.model, result.model_version, store


def _post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, str, dict]:
    """(status, body, headers) of POST /invocations; an error body must be churn's JSON alone."""
    req = urllib.request.Request(url + "/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as err:
        text = err.read().decode()
        assert "stack_trace" not in text and "Traceback" not in text and 'File "' not in text, text[:500]
        assert set(json.loads(text)) <= ERROR_KEYS, text[:500]
        return err.code, text, dict(err.headers)


def _frame(rows: pd.DataFrame) -> bytes:
    return json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()


def _with_cell(rows: pd.DataFrame, col: str, raw: str) -> bytes:
    """The rows as dataframe_split JSON with row 1's ``col`` spelled ``raw`` exactly (e.g. ``NaN``)."""
    bad = rows.copy()
    bad[col] = bad[col].astype(object)
    bad.loc[1, col] = "@@CELL@@"
    return _frame(bad).replace(b'"@@CELL@@"', raw.encode())


def test_valid_rows_are_scored_like_the_pipeline(served):
    """Three Telco rows: HTTP 200, the pipeline's probabilities and the 0/1 decision, and the version
    served in a header; integers sent as 3.0 score the same as 3."""
    url, rows, model, version, _ = served
    status, body, headers = _post(url, _frame(rows))
    assert status == 200, body
    assert headers["x-churn-model-version"] == str(version)
    out = pd.DataFrame(json.loads(body)["predictions"])
    assert list(out.columns) == ["probability", "decision"]
    assert (abs(out["probability"] - model.predict_proba(rows)[:, 1]) < 1e-9).all()
    as_floats = rows.astype({"tenure": float, "SeniorCitizen": float})
    status, body, _ = _post(url, _frame(as_floats))
    assert status == 200, body
    assert (abs(pd.DataFrame(json.loads(body)["predictions"])["probability"]
                - model.predict_proba(rows)[:, 1]) < 1e-9).all()


def test_reason_codes_when_the_request_asks(served):
    """?reasons=2 or "params": {"reasons": 2}: each row's two largest contributions, as the model's
    explanation gives them, values as sent; a bad count is one line and 400."""
    url, rows, model, _, _ = served
    top = top_reasons(explain(model, rows), rows, 2)
    body = json.loads(_frame(rows))
    for path, payload in (("/invocations?reasons=2", body), ("/invocations", {**body, "params": {"reasons": 2}})):
        req = urllib.request.Request(url + path, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            out = pd.DataFrame(json.loads(resp.read())["predictions"])
        assert list(out.columns) == ["probability", "decision", *reason_columns(2)]
        assert out["reason_1_column"].tolist() == top["reason_1_column"].tolist()
        assert out["reason_2_value"].tolist() == top["reason_2_value"].tolist()
        assert (abs(out["reason_1_contribution"] - top["reason_1_contribution"]) < 1e-9).all()
    req = urllib.request.Request(url + "/invocations?reasons=many", data=_frame(rows),
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 400
    assert json.loads(err.value.read())["message"] == "reasons must be a whole number from 0 to 10, not 'many'"


def test_every_endpoint_names_the_model_version(served):
    """/ping, /health and /version answer as MLflow's do, with the version header."""
    url, _, _, version, _ = served
    for path in ("/ping", "/health", "/version"):
        with urllib.request.urlopen(url + path, timeout=30) as resp:
            assert resp.status == 200
            assert resp.headers["X-Churn-Model-Version"] == str(version)


@pytest.mark.parametrize("change, message", [
    ({"Contract": "Ten year"}, "Contract='Ten year' is not one of"),
    ({"tenure": -5}, "tenure=-5 is below the minimum 0"),
    ({"SeniorCitizen": 3}, "SeniorCitizen=3 is above the maximum 1"),
    ({"PaymentMethod": None}, "PaymentMethod=None is blank"),
])
def test_a_row_ingest_would_quarantine_gets_400_naming_column_and_value(served, change, message):
    """Out-of-domain categories, out-of-range numbers, blanks: 400 with the column and value, no score."""
    url, rows, _, _, _ = served
    bad = rows.copy()
    for col, value in change.items():
        bad[col] = bad[col].astype(object)
        bad.loc[1, col] = value
    status, body, _ = _post(url, _frame(bad))
    assert status == 400, body
    assert f"row 1: {message}" in json.loads(body)["message"]


@pytest.mark.parametrize("col, raw, shown", [
    ("TotalCharges", "NaN", "'NaN'"),  # a nullable column: NaN is not a blank
    ("TotalCharges", "Infinity", "'Infinity'"),
    ("TotalCharges", "-Infinity", "'-Infinity'"),
    ("TotalCharges", "1e309", "inf"),
    ("TotalCharges", '"inf"', "'inf'"),
    ("TotalCharges", '"nan"', "'nan'"),
    ("MonthlyCharges", "Infinity", "'Infinity'"),
    ("tenure", "NaN", "'NaN'"),
])
def test_non_finite_numbers_get_400_naming_row_column_value_and_rule(served, col, raw, shown):
    """Each spelling of a non-finite number: 400, structured (row, column, value, rule), no score."""
    url, rows, _, _, _ = served
    status, body, _ = _post(url, _with_cell(rows, col, raw))
    assert status == 400, body
    err = json.loads(body)
    assert f"row 1: {col}={shown} is not" in err["message"]
    assert {(p["row"], p["column"], p["rule"]) for p in err["problems"]} == {(1, col, "not_finite")}


@pytest.mark.parametrize("col, raw, message, rule", [
    ("tenure", "1.9", "tenure=1.9 is not an integer", "not_an_integer"),
    ("tenure", "-0.5", "tenure=-0.5 is not an integer", "not_an_integer"),
    ("SeniorCitizen", "1.7", "SeniorCitizen=1.7 is not an integer", "not_an_integer"),
    ("tenure", "true", "tenure=True is not a number", "not_a_number"),
])
def test_integer_columns_are_not_truncated(served, col, raw, message, rule):
    """MLflow no longer casts 1.9 to 1, -0.5 to 0 or true to 1 before the rules: each is a 400."""
    url, rows, _, _, _ = served
    status, body, _ = _post(url, _with_cell(rows, col, raw))
    assert status == 400, body
    err = json.loads(body)
    assert f"row 1: {message}" in err["message"]
    assert (1, col, rule) in {(p["row"], p["column"], p["rule"]) for p in err["problems"]}


def test_a_body_over_the_cap_gets_413(served):
    """Over churn.serve.max-body: 413 whether the length is declared or the body is chunked."""
    url, rows, _, _, _ = served
    big = _frame(pd.concat([rows] * 300, ignore_index=True))
    assert len(big) > MAX_BODY
    status, body, headers = _post(url, big)
    assert status == 413, body
    assert "churn.serve.max-body" in json.loads(body)["message"]
    assert "x-churn-model-version" in {k.lower() for k in headers}
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    chunks = (big[i:i + 8192] for i in range(0, len(big), 8192))
    conn.request("POST", "/invocations", body=chunks, headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()


def test_malformed_requests_get_4xx_never_500(served):
    """A missing column, a wrong type, broken or deeply nested JSON, an empty body, a list, CSV: client
    errors, each with a message of churn's and nothing else."""
    url, rows, _, _, _ = served
    cases = [(_frame(rows.drop(columns=["tenure"])), 400), (_frame(rows.assign(tenure=["a", "b", "c"])), 400),
             (b'{"dataframe_split": {"columns": [', 400), (b"", 400), (b"[1, 2]", 400),
             (b'{"dataframe_split": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 400),
             (b'{"inputs": ' + b"[" * 500 + b"]" * 500 + b"}", None)]
    for body, expected in cases:
        status, text, _ = _post(url, body)
        assert 400 <= status < 500 and status == (expected or status), (status, text[:300])
        message = json.loads(text)["message"]
        assert message.strip()
        assert not any(echo in message for echo in ("Month-to-month", '"columns"', "[[[[")), message  # not echoed
    status, text, _ = _post(url, rows.to_csv(index=False).encode(), content_type="text/csv")
    assert status == 415, text


def test_a_model_the_store_does_not_hold_is_one_line_and_exit_2(served):
    """An unknown name in the served store: exit 2, one line naming the URI and the store (a store
    that does not exist: tests/jobs/test_serve.py)."""
    store = served[4]
    previous = mlflow.get_tracking_uri()
    try:
        res = CliRunner().invoke(app, ["serve", "--tracking-uri", store, "-m", "models:/no-such-model@champion"])
    finally:
        mlflow.set_tracking_uri(previous)
    assert res.exit_code == 2, res.output
    assert res.output.count("\n") == 1 and "models:/no-such-model@champion" in res.output and store in res.output


def test_a_model_registered_with_typed_integer_columns_is_not_truncated_either(served, tmp_path, monkeypatch):
    """A model whose signature still types tenure as ``long`` (registered before): MLflow alone scores
    tenure 1.9 as 1; churn's app (in process here) answers 400."""
    url, rows, _, version, store = served
    monkeypatch.setenv("_MLFLOW_IS_IN_SERVING_ENVIRONMENT", "false")  # MLflow's app sets it; restored after
    monkeypatch.setattr(sys, "path", list(sys.path))  # loading puts the model's code first on it
    mlflow.set_tracking_uri(store)
    path = Path(mlflow.artifacts.download_artifacts(f"models:/customer-churn/{version}", dst_path=str(tmp_path)))
    meta = Model.load(str(path))
    inputs = [ColSpec("long", c.name) if c.name == "tenure" else c for c in meta.signature.inputs.inputs]
    meta.signature = ModelSignature(Schema(inputs), meta.signature.outputs)
    meta.save(str(path / "MLmodel"))
    bad = rows.astype({"tenure": float})
    bad.loc[1, "tenure"] = 1.9
    with TestClient(scoring_server.init(mlflow.pyfunc.load_model(str(path)))) as http:  # MLflow's own app
        resp = http.post("/invocations", content=_frame(bad), headers={"Content-Type": "application/json"})
    assert resp.status_code == 200 and len(resp.json()["predictions"]) == 3  # 1.9 was scored as 1
    with TestClient(build_app(str(path), "old", MAX_BODY)) as http:
        resp = http.post("/invocations", content=_frame(bad), headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert "row 1: tenure=1.9 is not an integer" in resp.json()["message"]
    assert resp.headers["X-Churn-Model-Version"] == "old"
