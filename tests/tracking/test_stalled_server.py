"""A tracking server that answers /health but stalls on its API fails the command within the
bound the ``churn.tracking`` request settings give, in one line."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dask.config
import pytest

from churn.config import ConfigError
from churn.tracking.store import request_limits
from tests.conftest import ROOT


@pytest.fixture
def stalling_server() -> Iterator[tuple[str, list[str]]]:
    """A server on 127.0.0.1 that answers /health and MLflow's experiment search (churn's
    reachability check) and stalls on every other call; yields its URL and the stalled paths."""
    stalled: list[str] = []
    release = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?")[0]
            if path in ("/health", "/api/2.0/mlflow/experiments/search"):
                body = b"OK" if path == "/health" else json.dumps({"experiments": []}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            stalled.append(path)
            release.wait(60)  # never answers while the test runs

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", stalled
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.cluster  # a server and a subprocess
def test_a_stalled_tracking_server_fails_within_the_bound(forked_churn, stalling_server):
    """`churn status` against it, with a 1 s timeout and 1 retry: exit 1 and one line within a few
    seconds (MLflow's defaults: 8 attempts of 120 s), after exactly 2 attempts at the run."""
    url, stalled = stalling_server
    env = {**os.environ, "DASK_CHURN__TRACKING__REQUEST_TIMEOUT": "1s", "DASK_CHURN__TRACKING__MAX_RETRIES": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    t0 = time.monotonic()
    out = forked_churn.run("status", "0" * 32, "--tracking-uri", url, cwd=ROOT, timeout=120, env=env)
    elapsed = time.monotonic() - t0
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read run {'0' * 32} from {url}"), out.stderr
    assert stalled == ["/api/2.0/mlflow/runs/get"] * 2
    assert elapsed < 30, elapsed


def test_request_limits_come_from_the_settings():
    """The settings become MLflow's variables in whole seconds; a value MLflow would refuse is one ConfigError."""
    with dask.config.set({"churn.tracking.request-timeout": "2m", "churn.tracking.max-retries": 3,
                          "churn.tracking.backoff-factor": 0}):
        assert request_limits() == {"MLFLOW_HTTP_REQUEST_TIMEOUT": 120, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 3,
                                    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": 0}
    for key, value in (("max-retries", 11), ("max-retries", "many"), ("request-timeout", "0s"),
                       ("backoff-factor", -1), ("request-timeout", "soon")):
        with dask.config.set({f"churn.tracking.{key}": value}):
            with pytest.raises(ConfigError, match=f"churn.tracking.{key}={value!r}: expected a whole number"):
                request_limits()
