"""Real server processes on 127.0.0.1 for tests: started on a free port, awaited, always stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def http_process(args: list[str], ready_path: str, *, cwd: Path | None = None, timeout: float = 120,
                 env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``args`` (``{port}`` in them becomes a free port; ``env`` added to the environment) until
    ``ready_path`` answers 200; yield the base URL; stop the whole process group afterwards."""
    port = free_port()
    proc = subprocess.Popen([a.replace("{port}", str(port)) for a in args], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True, env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{args[0]} did not come up: " + proc.stderr.read().decode()[-2000:])
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
