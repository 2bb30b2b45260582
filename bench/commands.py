"""Fixed cost of the ``churn`` commands: wall time (interpreter start included) next to work time.

Each command runs as a new process (``python -m churn.cli ...``) in a scratch folder holding the
repository's data, jobs and cluster spec, the best of ``--repeat`` runs by wall time; user CPU
is the command's own plus that of the processes it started (less noisy than wall time on a
shared machine). Work time is what the command reports as its own work: the scoring seconds of
``churn score``, the "s of work" line of ``churn ingest`` (none for help, graph and status).

    python -m bench.commands --label after                     # this checkout
    python -m bench.commands --label before --source /tmp/old  # another copy of churn

Results are merged by label into ``bench/results/commands.json`` and rendered to
``bench/results/commands.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import BASE_ENV, RESULTS

ROOT = Path(__file__).resolve().parents[1]
SMALL_TRAIN = ["--set", "model.families=[logistic_regression]", "--set", "search.cv=2", "--set", "search.repeats=1",
               "--set", "model.ensemble=0", "--set", "evaluation.plots=false", "--set", "model.feature_sums=false"]
WORK = {"ingest": re.compile(r"([\d.]+) s of work"), "score": re.compile(r"│ seconds\s+│ ([\d.]+)")}


def churn(folder: Path, source: Path, *args: str) -> tuple[float, float, str]:
    """Wall seconds, user CPU seconds (with child processes) and output of one ``churn`` command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "churn.cli", *args], cwd=folder, capture_output=True, text=True,
                          env={**BASE_ENV, "PYTHONPATH": str(source), "COLUMNS": "140"}, timeout=900)
    wall = time.perf_counter() - t0
    user = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before
    if proc.returncode != 0:
        raise RuntimeError(f"churn {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall, user, proc.stdout + proc.stderr


def scratch(folder: Path) -> None:
    """The data, jobs and cluster spec of the repository in ``folder`` (sources linked, not copied)."""
    (folder / "data").symlink_to(ROOT / "data")
    shutil.copytree(ROOT / "jobs", folder / "jobs")
    shutil.copytree(ROOT / "cluster", folder / "cluster")


def last_run(folder: Path) -> str:
    with sqlite3.connect(folder / "mlflow.db") as con:
        return con.execute("SELECT run_uuid FROM runs ORDER BY start_time DESC LIMIT 1").fetchone()[0]


def measure(source: Path, repeat: int, only: list[str] | None = None,
            prepared: Path | None = None) -> dict[str, dict[str, float | None]]:
    with tempfile.TemporaryDirectory(prefix="bench-commands-") as tmp:
        folder = prepared or Path(tmp)
        if prepared is None:
            scratch(folder)
            churn(folder, source, "train", "jobs/train.yaml", *SMALL_TRAIN)  # a model for score, a run for status
            churn(folder, source, "ingest", "jobs/ingest.yaml")  # so that the measured ingest reuses it
        commands = {"help": ["--help"], "graph": ["graph", "jobs/train.yaml"], "status": ["status", last_run(folder)],
                    "ingest": ["ingest", "jobs/ingest.yaml"], "score": ["score", "jobs/score.yaml"]}
        commands = {k: v for k, v in commands.items() if only is None or k in only}
        out: dict[str, dict[str, float | None]] = {}
        for name, args in commands.items():
            runs = [churn(folder, source, *args) for _ in range(repeat)]
            wall, user, text = min(runs, key=lambda r: r[0])
            found = WORK[name].search(text) if name in WORK else None
            out[name] = {"wall": wall, "user": user, "work": float(found.group(1)) if found else None}
            print(f"{name:8s} wall {wall:5.2f} s  user {user:5.2f} s  work {out[name]['work']}", flush=True)
        return out


def render(results: dict[str, dict]) -> str:
    labels = list(results)
    head = "| command | " + " | ".join(f"{lb}: wall / user CPU / work (s)" for lb in labels) + " |"
    lines = ["# Fixed cost of the churn commands", "",
             "Best of 3 by wall time, each a new process (`python -m churn.cli ...`, interpreter start included), "
             "on 2 shared cores. User CPU counts the command and the processes it started (the LocalCluster's "
             "workers for ingest and score); work is the command's own work as it reports it (the scoring pass "
             "of `churn score`, the ingest's reuse check). Run `make bench-commands`.", ""]
    lines += [f"- `{lb}`: {results[lb]['note']}" for lb in labels if results[lb].get("note")]
    lines += ["", head, "|---|" + "---|" * len(labels)]
    for name in ("help", "graph", "status", "ingest", "score"):
        cells = []
        for lb in labels:
            r = results[lb]["commands"].get(name)
            work = "-" if not r or r["work"] is None else f"{r['work']:.1f} ({r['wall'] - r['work']:.1f} outside)"
            cells.append("-" if not r else f"{r['wall']:.2f} / {r['user']:.2f} / {work}")
        lines.append(f"| `churn {name}` | " + " | ".join(cells) + " |")
    lines += ["", "1-minute load average at the start / end of each column: " + ", ".join(
        f"{lb} {results[lb]['load'][0]:.1f} / {results[lb]['load'][1]:.1f}" for lb in labels)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--source", type=Path, default=ROOT, help="folder holding the churn package to time")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma-separated commands to time (help,graph,status,ingest,score); "
                                       "the label's other figures are kept")
    parser.add_argument("--note", help="what the label's column is (commit, conditions), shown above the table")
    parser.add_argument("--folder", type=Path, help="a scratch folder prepared by an earlier run (its model "
                                                    "trained, its data ingested): no train and ingest first")
    args = parser.parse_args()
    path = RESULTS / "commands.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    load = os.getloadavg()[0]
    only = args.only.split(",") if args.only else None
    measured = measure(args.source.resolve(), args.repeat, only, args.folder)
    previous = results.get(args.label, {}).get("commands", {}) if only else {}
    results[args.label] = {**results.get(args.label, {}), "commands": {**previous, **measured},
                           "load": [load, os.getloadavg()[0]]}  # 1-minute load average at the start and end
    if args.note:
        results[args.label]["note"] = args.note
    path.write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "commands.md").write_text(render(results))


if __name__ == "__main__":
    main()
