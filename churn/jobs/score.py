"""The score job: a registered model scores CSV data on the cluster. Wiring only.

Rows are checked with the rules logged with the model (:mod:`churn.tracking.model_rules`): the
preflight reads them from the model's MLmodel file (none of its code runs) before the cluster
starts, and the run takes them from the model it loads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import fsspec
import mlflow
from dask.utils import format_bytes, parse_bytes
from distributed import Client

from churn.clusters.local import in_process
from churn.config import ClusterSpec, ConfigError, LocalClusterSpec, ScoreSpec, setting
from churn.config.score import score_id_problem
from churn.data.ingest import check_headers, check_output_folder
from churn.data.publish import remove_abandoned
from churn.modeling.batch import ModelRef, ScoreResult, score
from churn.tracking.model_rules import logged_rules, with_model_table
from churn.tracking.registry import load_churn_model
from churn.tracking.store import check_store, resolve_uri

log = logging.getLogger(__name__)


def preflight(spec: ScoreSpec) -> str:
    """Source files, output folder, tracking store, the job's schema against the model's rules and
    the files' headers (label optional); returns the URI."""
    paths = spec.data.paths()
    check_output_folder(spec)
    uri = resolve_uri(spec.tracking)
    check_store(uri)
    mlflow.set_tracking_uri(uri)
    spec = score_table(spec, logged_rules(spec.model_uri))
    check_headers(paths, spec.table, spec.data.encoding, require_label=False)
    return uri


COMPRESSED_RATIO = 10  # CSV text compresses about 5-10x; the larger ratio keeps compressed input off the small path


def input_bytes(spec: ScoreSpec) -> int:
    """The size of all the files ``spec`` scores, as rows of text: a compressed file counts as
    :data:`COMPRESSED_RATIO` times its size (a 60 MiB .csv.gz holds several hundred MiB of rows,
    read as one block), so compressed input is not taken for small."""
    total = 0
    for path in spec.data.paths():
        fs, p = fsspec.core.url_to_fs(path)
        size = int(fs.size(p))
        total += size * COMPRESSED_RATIO if fsspec.utils.infer_compression(p) else size
    return total


def cluster_for(spec: ScoreSpec, cluster: ClusterSpec | None) -> ClusterSpec | None:
    """The cluster to score ``spec`` on: ``cluster``, but for a LocalCluster of worker processes
    and at most ``churn.score.in-process-max`` bytes of input, the same cluster with its workers'
    threads in this process (:func:`churn.clusters.local.in_process`), said in the log.

    Worker processes pay a fixed cost before the first row: each starts Python, imports
    scikit-learn and the scoring code and receives a copy of the model (~3 s of CPU apiece on
    this project's 2-core machine), and stops at the end; this process has all of that loaded
    already, and its threads share the one model. Scoring the 7,043 Telco rows takes under a
    second. On large inputs processes win (parsing and checking hold the GIL in part; each
    worker process has its own memory limit, and a block that kills one is named, not the job's end).
    """
    if not isinstance(cluster, LocalClusterSpec) or not cluster.processes:
        return cluster
    limit = parse_bytes(setting("score.in-process-max"))
    size = input_bytes(spec)
    if size > limit:
        return cluster
    threads = in_process(cluster)
    log.info("score: %s of input (at most churn.score.in-process-max, %s): scoring in %d thread(s) of this "
             "process, not in worker processes", format_bytes(size), format_bytes(limit),
             threads.threads_per_worker)
    return threads


def score_table(spec: ScoreSpec, rules: dict[str, Any]) -> ScoreSpec:
    """``spec`` with the table its rows are checked with (:func:`with_model_table`); an id named
    like a score column, which the spec's own check cannot see in the model's table, is refused."""
    spec = with_model_table(spec, rules)
    problem = score_id_problem(spec.table)
    if problem:
        raise ConfigError(f"{problem} (the table logged with {spec.model_uri})")
    return spec


def run(spec: ScoreSpec, client: Client) -> ScoreResult:
    """Load the model once in the driver, then score every block on the workers with its rules."""
    remove_abandoned(Path(spec.data.output))  # .staging-scores-* folders of killed score drivers, as ingest does
    mlflow.set_tracking_uri(resolve_uri(spec.tracking))
    model = load_churn_model(spec.model_uri)
    spec = score_table(spec, model.rules)
    return score(spec, client, model.pipeline, ModelRef(spec.model_uri, model.name, model.version, model.threshold))
