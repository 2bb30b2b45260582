"""Serving benchmark: `churn serve` (MLflow's scoring server, 1 worker) on 127.0.0.1, with a
real HTTP client on the same machine: latency of 1-row and 100-row requests, one at a time.

    python -m bench.serve [--requests 400]

Writes bench/results/serve.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import bench_logging, train_small_model, write_table
from churn.clusters import cluster_client
from churn.config import LocalClusterSpec

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "bench" / "serve"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _latencies(port: int, body: bytes, n: int) -> np.ndarray:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    for i in range(n + 20):  # the first 20 warm up
        t0 = time.perf_counter()
        conn.request("POST", "/invocations", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}")
        if i >= 20:
            out.append(time.perf_counter() - t0)
    conn.close()
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=400)
    args = ap.parse_args()
    bench_logging()
    with cluster_client(LocalClusterSpec(n_workers=2, dashboard_address=None)) as client:
        store, model_uri = train_small_model(WORK, client)
    rows = pd.read_csv(ROOT / "data" / "telco" / "Telco-Customer-Churn.csv", na_values=[" "])
    rows = rows.drop(columns=["customerID", "Churn"])

    def body(n: int) -> bytes:
        frame = json.loads(rows.head(n).to_json(orient="split", index=False))
        return json.dumps({"dataframe_split": frame}).encode()

    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "churn.cli", "serve", "--tracking-uri", store, "--port", str(port),
                             "-m", model_uri], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        table = []
        for n_rows, n_req in [(1, args.requests), (100, max(50, args.requests // 4))]:
            lat = _latencies(port, body(n_rows), n_req)
            table.append([f"{n_rows} row(s)", n_req, f"{1000 * np.percentile(lat, 50):.1f}",
                          f"{1000 * np.percentile(lat, 99):.1f}", f"{len(lat) / lat.sum():.0f}",
                          f"{n_rows * len(lat) / lat.sum():,.0f}"])
            logging.info("%s", table[-1])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    p99_one = float(table[0][3])
    write_table("serve", "Serving benchmark (churn serve, MLflow scoring server, 1 worker)",
                ["request", "requests", "p50 ms", "p99 ms", "requests/s", "rows/s"], table, [
                    f"Model: {model_uri} (hist_gradient_boosting on Telco), served by `churn serve` on "
                    "127.0.0.1 with the table's rules checked on every request.",
                    "Client: one keep-alive HTTP connection from this machine, one request at a time, after 20 "
                    "warm-up requests; latency is the client's wall time per request.",
                    f"1-row p99: {p99_one:.1f} ms (target <= 25 ms).",
                ])


if __name__ == "__main__":
    main()
