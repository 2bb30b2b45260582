"""`churn serve`'s HTTP app: MLflow's own scoring server inside a small ASGI middleware.

MLflow's app (``mlflow.pyfunc.scoring_server.init``) keeps ``/ping``, ``/health``, ``/version``
and ``POST /invocations``; :class:`Bounded` in front of it

* refuses a request body over ``max_body`` bytes with 413, before reading past the cap;
* takes JSON only (415 otherwise), refuses malformed or too deeply nested JSON with 400, and
  turns JSON's non-finite constants (``NaN``, ``Infinity``, ``-Infinity``) into text, so that
  the table's rules name the row and column holding them (as a number they would be a blank);
* rewrites every error body to churn's message alone, ``{"error_code", "message"}`` plus
  ``problems`` (row, column, value, rule) when rows break the table's rules: never MLflow's
  ``stack_trace``, nor the request echoed back;
* names the model version it serves in every response (``X-Churn-Model-Version``);
* takes the reason codes a request asks for as a query parameter (``POST /invocations?reasons=3``)
  as well as MLflow's own way, ``"params": {"reasons": 3}`` in the body: each returned row then
  carries ``reason_<i>_column``, ``reason_<i>_value`` and ``reason_<i>_contribution``
  (:mod:`churn.serving.reasons`).

Stock ``mlflow models serve`` has none of this. The app is built by :func:`build_app`, or by
:func:`app_from_env` in each uvicorn worker process when there are several.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

MODEL_DIR_ENV = "_CHURN_SERVE_MODEL_DIR"  # what app_from_env reads in each worker process
VERSION_ENV = "_CHURN_SERVE_MODEL_VERSION"
MAX_BODY_ENV = "_CHURN_SERVE_MAX_BODY"
VERSION_HEADER = b"x-churn-model-version"
MAX_MESSAGE = 2000  # characters of an error message sent back
MAX_REASONS = 10  # as churn.serving.pyfunc.MAX_REASONS (this module imports no model code before it loads one)

log = logging.getLogger(__name__)


class Refused(Exception):
    """A request refused before MLflow sees it: HTTP ``status`` with churn's ``message``."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


def non_finite_as_text(body: bytes) -> bytes:
    """The JSON ``body`` with ``NaN``, ``Infinity`` and ``-Infinity`` turned into strings (the
    body unchanged when it has none); :class:`Refused` when it is not JSON or nests too deep."""
    seen: list[str] = []

    def constant(name: str) -> str:
        seen.append(name)
        return name

    try:
        parsed = json.loads(body, parse_constant=constant)
    except RecursionError:
        raise Refused(400, "BAD_REQUEST", "the JSON body nests too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise Refused(400, "BAD_REQUEST", f"the body is not valid JSON: {exc}") from None
    return json.dumps(parsed).encode() if seen else body


def with_reasons(body: bytes, query: bytes) -> bytes:
    """The JSON ``body`` with the query's ``reasons=k`` put in its ``params`` (where MLflow's app
    passes it to the model); the body unchanged without one; :class:`Refused` for a ``reasons``
    that is not a whole number from 0 to 10, or that the body's own ``params`` contradicts."""
    from urllib.parse import parse_qs

    asked = parse_qs(query.decode(errors="replace")).get("reasons")
    if not asked:
        return body
    text = asked[-1].strip()
    if not text.isdigit() or int(text) > MAX_REASONS:
        raise Refused(400, "BAD_REQUEST", f"reasons must be a whole number from 0 to {MAX_REASONS}, not {text!r}")
    parsed = json.loads(body)
    if not isinstance(parsed, dict):
        raise Refused(400, "BAD_REQUEST", "the body must be a JSON object (dataframe_split, dataframe_records, "
                      "instances or inputs)")
    params = parsed.get("params") or {}
    if not isinstance(params, dict):
        raise Refused(400, "BAD_REQUEST", "params must be a JSON object")
    if "reasons" in params and params["reasons"] != int(text):
        raise Refused(400, "BAD_REQUEST", f"reasons={text} in the query but {params['reasons']!r} in params")
    parsed["params"] = {**params, "reasons": int(text)}
    return json.dumps(parsed).encode()


def churn_error(status: int, body: bytes) -> tuple[int, dict[str, Any]]:
    """An error response of MLflow's app rewritten to churn's body: its error code, the message
    alone (without the rows MLflow echoes or a stack trace) and, when the table's rules refused
    rows, the ``problems``; a server error says only that (its traceback is in the server log)."""
    try:
        err = json.loads(body)
    except ValueError:
        err = {"message": body.decode(errors="replace")}
    if not isinstance(err, dict):
        err = {"message": str(err)}
    if status >= 500:  # 500, or 504 from MLflow's request timeout (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT)
        return status, {"error_code": "INTERNAL_ERROR",
                        "message": f"the server could not score the request (HTTP {status}); its log says more"}
    out: dict[str, Any] = {"error_code": err.get("error_code", "BAD_REQUEST")}
    if isinstance(err.get("problems"), list):
        out["message"] = "rows break the table's rules: " + "; ".join(p["message"] for p in err["problems"])
        out["problems"] = err["problems"]
        return status, out
    out["message"] = mlflow_reason(str(err.get("message", "")))
    return status, out


def mlflow_reason(message: str) -> str:
    """The reason in an error message of MLflow's scoring app, without the rows it echoes:
    MLflow wraps a prediction error as "Failed to predict data '<rows>'. Error: <why>" (a schema
    error nests one more such prefix), a JSON error as "<why>\nInput: <body>", and appends a
    note on its 2.0 protocol change to a request without a known input field."""
    from mlflow.pyfunc.scoring_server import SCORING_PROTOCOL_CHANGE_INFO

    while True:
        reason = re.sub(r"^Failed to [^\n]*?data .*?Error: ", "", message, count=1, flags=re.S)
        if reason == message:
            break
        message = reason
    message = message.split("\nInput:", 1)[0].replace(SCORING_PROTOCOL_CHANGE_INFO, "").strip()
    return message[:MAX_MESSAGE]


class Bounded:
    """ASGI middleware around MLflow's scoring app: body cap, JSON checks, error bodies, version header."""

    def __init__(self, app: Any, version: str, max_body: int):
        self.app, self.version, self.max_body = app, version, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] != "/invocations" or scope["method"] != "POST":
            async def versioned(message: dict) -> None:
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), self._header()]}
                await send(message)

            await self.app(scope, receive, versioned)
            return
        try:
            body = with_reasons(await self._body(scope, receive), scope.get("query_string", b""))
        except Refused as exc:
            await self._reply(send, exc.status, {"error_code": exc.error_code, "message": exc.message})
            return
        await self._invoke(scope, body, send)

    def _header(self) -> tuple[bytes, bytes]:
        return VERSION_HEADER, self.version.encode()

    async def _reply(self, send: Any, status: int, payload: dict[str, Any]) -> None:
        await self._send(send, status, [(b"content-type", b"application/json")], json.dumps(payload).encode())

    async def _send(self, send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        headers = [(k, v) for k, v in headers if k.lower() not in (b"content-length", VERSION_HEADER)]
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, self._header(), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _body(self, scope: dict, receive: Any) -> bytes:
        """The request body, checked: :class:`Refused` when over the cap, not JSON, or malformed."""
        headers = dict(scope["headers"])
        too_big = Refused(413, "REQUEST_LIMIT_EXCEEDED", f"the request body is larger than {self.max_body} bytes "
                          "(churn.serve.max-body): send fewer rows per request, or score them with churn score")
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            raise too_big
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "BAD_REQUEST", "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise too_big
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        mime = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if mime != b"application/json":
            raise Refused(415, "BAD_REQUEST", "churn serve takes application/json (dataframe_split, "
                          "dataframe_records, instances or inputs)")
        return non_finite_as_text(b"".join(chunks))

    async def _invoke(self, scope: dict, body: bytes, send: Any) -> None:
        """Run MLflow's app on ``body``; pass a success through, rewrite an error (:func:`churn_error`)."""
        start: dict = {}
        parts: list[bytes] = []
        delivered = False

        async def receive() -> dict:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                parts.append(message.get("body", b""))

        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        try:
            await self.app({**scope, "headers": headers}, receive, capture)
        except Exception:  # logged here, in the server's log; the client gets churn's message only
            log.exception("scoring a request failed")
            start = {"status": 500}
        status = start.get("status", 500)
        if status < 400:
            await self._send(send, status, start.get("headers", []), b"".join(parts))
        else:
            await self._reply(send, *churn_error(status, b"".join(parts)))


def build_app(model_dir: str, version: str, max_body: int) -> Bounded:
    """Load the model in ``model_dir`` (a local copy, already resolved and checked by the caller)
    and wrap MLflow's scoring app for it in :class:`Bounded`."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import scoring_server
    from mlflow.types.schema import ParamSchema, ParamSpec

    from churn.serving.pyfunc import untyped

    model = mlflow.pyfunc.load_model(model_dir)
    signature = model.metadata.signature
    if signature is not None:  # models registered before 2026-12 typed their integer columns
        numeric = model.unwrap_python_model().rules.get("numeric", {})
        # MLflow hands the model only the params its signature declares: reasons (0 when not asked)
        params = [p for p in (signature.params.params if signature.params else []) if p.name != "reasons"]
        model.metadata.signature = ModelSignature(untyped(signature.inputs, numeric), signature.outputs,
                                                  ParamSchema([*params, ParamSpec("reasons", "long", 0)]))
    return Bounded(scoring_server.init(model), version, max_body)


def app_from_env() -> Bounded:
    """:func:`build_app` from the environment `churn serve` sets: the factory each uvicorn worker
    process calls when there are several."""
    return build_app(os.environ[MODEL_DIR_ENV], os.environ[VERSION_ENV], int(os.environ[MAX_BODY_ENV]))
