"""Helpers shared by the benchmarks: timing in a fresh process, worker resource use, tables."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# The environment as the benchmark started. A LocalCluster's nannies run in this process and
# write distributed's pre-spawn-environ (OMP_NUM_THREADS=1, MALLOC_TRIM_THRESHOLD_, ...) into
# os.environ for good; a baseline started later must not inherit that silently.
BASE_ENV = dict(os.environ)


def median_run(runs: list[Any], seconds: Callable[[Any], float], label: str) -> tuple[Any, str]:
    """The median of repeated runs by wall time, and the spread as "label fastest-slowest"."""
    ordered = sorted(runs, key=seconds)
    return ordered[len(ordered) // 2], f"{label} {seconds(ordered[0]):.1f}-{seconds(ordered[-1]):.1f}"


def run_isolated(code: str, timeout: float = 3600, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh Python with the environment the benchmark started with, plus
    ``env``; it must print one JSON line. Adds wall, CPU (its own and that of the processes it
    started) and peak RSS (the largest single process)."""
    wrapper = (
        "import json, resource, time, sys\n"
        "ru0 = resource.getrusage(resource.RUSAGE_SELF)\n"
        "t0 = time.perf_counter()\n"
        f"{code}\n"
        "wall = time.perf_counter() - t0\n"
        "ru = resource.getrusage(resource.RUSAGE_SELF)\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN)  # processes it started and waited for\n"
        "out = dict(result or {})\n"
        "cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime + kids.ru_utime + kids.ru_stime\n"
        "out.update(wall=wall, cpu=cpu, peak_rss=max(ru.ru_maxrss, kids.ru_maxrss) * 1024)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=timeout,
                          env={**BASE_ENV, "PYTHONHASHSEED": "0", **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def worker_usage(client: Any) -> dict[str, dict[str, float]]:
    """CPU seconds and peak RSS of every worker process (and its pid, to spot restarts)."""

    def probe() -> dict[str, float]:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return {"pid": os.getpid(), "cpu": ru.ru_utime + ru.ru_stime, "peak_rss": ru.ru_maxrss * 1024}

    return client.run(probe)


def self_usage() -> dict[str, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": ru.ru_utime + ru.ru_stime, "peak_rss": ru.ru_maxrss * 1024}


def write_table(name: str, title: str, columns: list[str], rows: list[list[Any]], notes: list[str]) -> Path:
    """Write a Markdown table to bench/results/NAME.md and print it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
             f"{os.cpu_count()} cores.", "", "| " + " | ".join(columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += [""] + [f"- {n}" for n in notes] + [""]
    path = RESULTS / f"{name}.md"
    path.write_text("\n".join(lines))
    print("\n".join(lines))
    return path


def mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:,.0f}"


def bench_logging() -> None:
    """Progress lines with times; distributed's chatter off."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("distributed").setLevel(logging.ERROR)


def train_small_model(work: Path, client: Any) -> tuple[str, str]:
    """A registered hist-gradient-boosting model on Telco in a store under ``work``: (store URI, model URI)."""
    from churn.config import load_job
    from churn.jobs.train import run

    store = f"sqlite:///{work / 'mlflow.db'}"
    job = load_job(Path(__file__).resolve().parents[1] / "jobs" / "train.yaml", [
        f"data.output={work / 'datasets'}", f"tracking.uri={store}", "model.families=[hist_gradient_boosting]",
        "search.cv=3", "evaluation.plots=false"])
    return store, run(job, client).model_uri
