"""The ``churn`` command line: specs in, one typed config object into each job.

Every failure a user can cause or meet (a bad spec, an unreachable cluster or tracking store,
too few rows, Ctrl-C, SIGTERM) ends in one line on stderr and an exit code, no traceback. Messages
are printed verbatim (never read as Rich markup: "pip install 'churn[k8s]'" keeps its brackets).

Importing this module loads Typer, Rich and the config layer only: scikit-learn, MLflow, Dask's
distributed, pandas and the modeling package are imported inside the commands that use them, so
``churn --help``, ``churn graph`` and ``churn status`` answer in well under a second
(``tests/cli/test_fast_commands.py`` holds it).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.logging import RichHandler
from rich.text import Text

from churn.cli import summary
from churn.cli.progress import FitProgress
from churn.cli.quiet import quiet_libraries
from churn.config import (
    AddressSpec,
    ClusterSpec,
    ConfigError,
    JobSpec,
    LocalClusterSpec,
    load_cluster,
    load_job,
    load_monitor_job,
    load_score_job,
)

STARTED = time.perf_counter()  # when the CLI was imported: a command's time since it started
app = typer.Typer(help="Customer-churn model training that scales out on Dask.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)  # logs to a file: no wrapping


@app.callback()
def _root() -> None:
    """Customer-churn model training that scales out on Dask."""

EXIT_CONFIG = 2  # a spec, an input file or an argument is wrong; nothing was started
EXIT_RUNTIME = 1  # something failed while running (cluster, tracking, data budget)
EXIT_DRIFT = 3  # churn monitor: a drift or performance threshold was crossed (the run finished)
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM


class Terminated(Exception):
    """SIGTERM, raised in the main thread so that every context manager unwinds (the MLflow
    run is marked FAILED, the cluster is closed, staging folders are removed)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """SIGTERM becomes :class:`Terminated` while a job runs."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

JobArg = Annotated[Path, typer.Argument(help="Job spec (YAML): what to run.")]
ClusterOpt = Annotated[Optional[Path], typer.Option("--cluster", help="Cluster spec (YAML): where to run.")]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="Address of an existing Dask scheduler.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a job key: --set search.cv=3.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(console=console, show_path=False)], force=True)
    quiet_libraries()


def _out() -> Console:
    """The console a summary goes to (stdout): the terminal's width, or ``COLUMNS``; a file or pipe
    without ``COLUMNS`` gets wide lines (a log file wraps nothing)."""
    wide = not sys.stdout.isatty() and not os.environ.get("COLUMNS")
    return Console(width=summary.WIDE if wide else None)


def _timed(work: Callable[[Any], Any], name: str,
           seconds: Callable[[Any], float] | None = None) -> Callable[[Any], Any]:
    """``work`` logging its own seconds (the rest of a command's time is its fixed cost): all of
    ``work``, or ``seconds(result)`` where the result tells its work apart from its setup."""
    def timed(client: Any) -> Any:
        t0 = time.perf_counter()
        out = work(client)
        spent = time.perf_counter() - t0 if seconds is None else seconds(out)
        logging.getLogger("churn.cli").info("%s: %.1f s of work on the cluster, %.1f s since the command started",
                                            name, spent, time.perf_counter() - STARTED)
        return out
    return timed


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Cyclic garbage collection off while a command imports its libraries, which are then moved
    where no collection looks again (``gc.freeze``): the millions of objects they make live as
    long as the process, yet every full collection, the last one at exit included, would walk
    them all again (~0.9 s of CPU of a `churn score`)."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _say(label: str, style: str, message: str) -> None:
    """``label: message`` on stderr, the message verbatim (no markup, no highlighting)."""
    console.print(Text.assemble((label, style), " ", message), highlight=False, soft_wrap=True)


def _fail(message: str, code: int) -> None:
    _say("error:", "bold red", message)
    raise typer.Exit(code)


def _cluster(cluster: Path | None, scheduler: str | None) -> ClusterSpec | None:
    """The cluster spec from ``--cluster`` (default ``cluster/local.yaml``, else a LocalCluster);
    None with ``--scheduler``, whose address is checked here, before anything starts."""
    if cluster is not None and scheduler is not None:
        _fail("give --cluster or --scheduler, not both", EXIT_CONFIG)
    if scheduler is not None:
        try:
            AddressSpec(address=scheduler)
        except ValidationError as exc:
            raise ConfigError(f"--scheduler {scheduler}: {exc.errors()[0]['msg']} (a tls:// scheduler needs a "
                              "cluster spec of kind address with a tls section: --cluster)") from None
        return None
    default = Path("cluster/local.yaml")
    if cluster is None and not default.is_file():
        return LocalClusterSpec()
    return load_cluster(cluster or default)


def _load_job(job: Path, set_: list[str] | None) -> JobSpec:
    try:
        return load_job(job, set_ or [])
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
        raise  # unreachable: _fail exits


def _load(job: Path, set_: list[str] | None, cluster: Path | None, scheduler: str | None,
          loader: Callable[[Path, list[str]], Any] = load_job) -> tuple[Any, ClusterSpec | None]:
    """The job spec (train by default; ``loader`` for score and monitor specs) and the cluster spec."""
    try:
        return loader(job, set_ or []), _cluster(cluster, scheduler)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
        raise  # unreachable: _fail exits


def _loaded(*names: str) -> tuple[type[BaseException], ...]:
    """The exception classes named ``module:Class`` whose modules are imported already."""
    found = []
    for name in names:
        module, cls = name.split(":")
        if module in sys.modules:
            found.append(getattr(sys.modules[module], cls))
    return tuple(found)


def _on_cluster(cluster_spec: ClusterSpec | None, scheduler: str | None, work: Callable[[Any], Any],
                preflight: Callable[[], Any],
                choose: Callable[[ClusterSpec | None], ClusterSpec | None] | None = None) -> Any:
    """Run ``preflight()`` (no cluster yet), then ``work(client)`` on the cluster ``cluster_spec``
    describes (or ``choose(cluster_spec)``, once the preflight passed); every failure is one message."""
    from concurrent.futures import CancelledError

    from distributed.comm.core import CommClosedError

    from churn.cli.workers import QuietWorkers
    from churn.clusters import ClusterError, cluster_client
    from churn.tracking.store import TrackingError, error_line

    quiet_libraries()
    with _signals():
        try:
            preflight()
            if choose is not None:
                cluster_spec = choose(cluster_spec)
            with cluster_client(cluster_spec, address=scheduler) as client:
                client.register_plugin(QuietWorkers())
                try:
                    return work(client)
                except (KeyboardInterrupt, Terminated):
                    # the cluster now closes under running tasks: nothing to report of that, here or
                    # on the workers (whose heartbeats would otherwise log the lost scheduler)
                    quiet_libraries(logging.CRITICAL)
                    with contextlib.suppress(Exception):
                        client.run(quiet_libraries, logging.CRITICAL)
                    raise
        # the job's own errors, of the modules it loaded (a module never imported raised nothing): a
        # command does not import scikit-learn or MLflow only to name their errors
        except (ConfigError, *_loaded("churn.data.ingest:SchemaDriftError")) as exc:
            _fail(str(exc), EXIT_CONFIG)
        except (ClusterError, TrackingError, *_loaded(
                "churn.data.manifest:IngestError", "churn.data.split:DataCountError",
                "churn.modeling.preflight:RoundTripError", "churn.tracking.run_log:RunEndedError")) as exc:
            _fail(str(exc), EXIT_RUNTIME)
        except CommClosedError as exc:  # the scheduler or a worker went away under a running step
            _fail(f"lost the connection to the Dask cluster: {exc}", EXIT_RUNTIME)
        except CancelledError as exc:  # tasks cancelled by the scheduler (their data was lost)
            _fail(f"the Dask cluster cancelled a task of the job: {exc}", EXIT_RUNTIME)
        except _loaded("mlflow.exceptions:MlflowException") as exc:  # the store failed under the job (stalled, full)
            _fail(f"tracking store: {error_line(exc)}", EXIT_RUNTIME)
        except OSError as exc:  # e.g. a disk that filled up under the job: "[Errno 28] No space left …: 'path'"
            _fail(str(exc) if exc.errno else f"{type(exc).__name__}: {exc}", EXIT_RUNTIME)  # numpy's: no errno
        except KeyboardInterrupt:
            _fail("interrupted (Ctrl-C): the MLflow run is marked FAILED and nothing half-written was "
                  "published", EXIT_INTERRUPTED)
        except Terminated:
            _fail("terminated (SIGTERM): the MLflow run is marked FAILED and nothing half-written was "
                  "published", EXIT_TERMINATED)


@app.command()
def ingest(job: JobArg, cluster: ClusterOpt = None, scheduler: SchedulerOpt = None, set_: SetOpt = None,
           force: Annotated[bool, typer.Option("--force", help="Rebuild even when inputs are unchanged.")] = False,
           verbose: VerboseOpt = False) -> None:
    """Validate CSV files into a partitioned Parquet dataset plus a quarantine and a manifest."""
    _logging(verbose)
    spec, cluster_spec = _load(job, set_, cluster, scheduler)
    from churn.jobs import ingest as ingest_job

    ds = _on_cluster(cluster_spec, scheduler, _timed(lambda client: ingest_job.run(spec, client, force=force),
                                                     "ingest"),
                     preflight=lambda: ingest_job.preflight(spec))
    out = _out()
    out.print(summary.ingest_table(spec, ds, out.width))


@app.command()
def generate(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Number of data rows in all.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the CSV files into.")],
    files: Annotated[int, typer.Option("--files", min=1, help="Number of CSV files.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same bytes.")] = 0,
    dirty: Annotated[float, typer.Option("--dirty", min=0.0, max=0.49,
                                         help="Fraction of rows given a known fault (telco shape).")] = 0.0,
    shape: Annotated[str, typer.Option("--shape", help="telco: the IBM Telco columns; telecom-large: "
                                       "thousands of Zipf levels, true probabilities in truth.parquet.")] = "telco",
    verbose: VerboseOpt = False,
) -> None:
    """Write synthetic churn CSVs, streamed: Telco-shaped (expected fault counts in expected.json), or
    the large telecom shape (each row's true churn probability beside them in truth.parquet)."""
    _logging(verbose)
    if shape not in ("telco", "telecom-large"):
        _fail(f"--shape must be telco or telecom-large, not {shape!r}", EXIT_CONFIG)
    if shape == "telecom-large":
        if dirty:
            _fail("--dirty injects faults into the telco shape only; leave it out with --shape telecom-large",
                  EXIT_CONFIG)
        from churn.data.telecom import generate_telecom

        try:
            large = generate_telecom(out, rows, files, seed)
        except OSError as exc:
            _fail(f"cannot write to {out}: {exc}", EXIT_RUNTIME)
        Console().print(f"wrote {large.rows:,} rows to {len(large.files)} file(s) in {out} (churn rate "
                        f"{large.churn_rate:.3f}); true probabilities in {large.truth}", highlight=False)
        return
    from churn.data.generate import generate as run_generate

    try:
        result = run_generate(out, rows, files, seed, dirty)
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc}", EXIT_RUNTIME)
    Console().print(Text(f"wrote {result.rows:,} rows to {len(result.files)} file(s) in {out}; "
                         f"expected counts in {out / 'expected.json'}"), highlight=False)


cluster_app = typer.Typer(help="Work with cluster specs.", no_args_is_help=True)
app.add_typer(cluster_app, name="cluster")


@cluster_app.command("render")
def cluster_render(spec: Annotated[Path, typer.Argument(help="Cluster spec (YAML).")],
                   set_: SetOpt = None) -> None:
    """Print what the spec would launch (sbatch script, DaskCluster manifest, ssh commands),
    without launching anything."""
    from churn.clusters import ClusterError, render

    try:
        text = render(load_cluster(spec, set_ or []))
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except ClusterError as exc:  # an optional backend that is not installed
        _fail(str(exc), EXIT_CONFIG)
    typer.echo(text, nl=False)


schema_app = typer.Typer(help="Work with table schemas.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")


@schema_app.command("infer")
def schema_infer(
    file: Annotated[Path, typer.Argument(help="A CSV file to sample.")],
    rows: Annotated[int, typer.Option("--rows", min=10, help="Rows to sample.")] = 50_000,
) -> None:
    """Print a starting schema block for a job spec, with each column's inferred type."""
    if not file.is_file():
        _fail(f"no such file: {file}", EXIT_CONFIG)
    from churn.data.schema_infer import infer_columns, schema_yaml

    try:
        guesses = infer_columns(str(file), rows)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas parser errors are ValueErrors
        _fail(f"{file}: cannot read it as CSV: {exc}", EXIT_CONFIG)
    from churn.config.job import reserved_column

    reserved = reserved_column([g.name for g in guesses])
    if reserved:  # a schema naming it would be refused
        _fail(f"{file}: {reserved}", EXIT_CONFIG)
    typer.echo(schema_yaml(guesses), nl=False)


@app.command()
def train(job: JobArg, cluster: ClusterOpt = None, scheduler: SchedulerOpt = None, set_: SetOpt = None,
          verbose: VerboseOpt = False,
          promote: Annotated[bool, typer.Option("--promote", help="Make the new version @champion even when "
                                                "the promotion gate would not (the run says so).")] = False) -> None:
    """Ingest, split, search, evaluate and register a churn model (@champion if it passes the
    promotion gate, else @challenger)."""
    _logging(verbose)
    spec, cluster_spec = _load(job, set_, cluster, scheduler)
    from churn.jobs import train as train_job
    from churn.tracking.store import ui_hint

    t0 = time.perf_counter()
    with FitProgress(console) as progress:
        result = _on_cluster(cluster_spec, scheduler,
                             lambda client: train_job.run(spec, client, job_file=str(job), progress=progress,
                                                          force_promote=promote, cluster=cluster_spec),
                             preflight=lambda: train_job.preflight(spec))
    out = _out()
    out.print(summary.train_summary(spec, result, time.perf_counter() - t0, out.width))
    out.print(Text(f"MLflow UI: {ui_hint(result.tracking_uri)}"), highlight=False, soft_wrap=True)


@app.command()
def submit(job: JobArg, scheduler: SchedulerOpt = None, cluster: Annotated[Optional[Path], typer.Option(
        "--cluster", help="Cluster spec of kind address (e.g. a tls:// scheduler).")] = None,
           set_: SetOpt = None, verbose: VerboseOpt = False) -> None:
    """Run a train job on a running cluster, detached: prints the MLflow run id at once; the job goes
    on after this command exits (follow it with `churn status RUN_ID`)."""
    _logging(verbose)
    if scheduler is None and cluster is None:
        _fail("churn submit needs a running cluster: --scheduler ADDRESS, or --cluster with an address spec",
              EXIT_CONFIG)
    spec, cluster_spec = _load(job, set_, cluster, scheduler)
    if cluster_spec is not None and cluster_spec.kind != "address":
        _fail(f"churn submit needs a running cluster: {cluster} is of kind {cluster_spec.kind!r}, not 'address'",
              EXIT_CONFIG)
    from churn.jobs import submit as submit_job
    from churn.jobs import train as train_job

    run_id = _on_cluster(cluster_spec, scheduler, lambda client: submit_job.submit(spec, client, str(job)),
                         preflight=lambda: train_job.preflight(spec))
    typer.echo(run_id)


def _readable_store(tracking_uri: str | None) -> str:
    """The store a read-only command uses (``--tracking-uri``, else as in train), which must exist
    already: a store that is not there is not created; one line and exit 2 (or 1: a server that
    does not answer) otherwise."""
    from churn.config import TrackingSpec
    from churn.tracking.store import TrackingError, check_readable, resolve_uri

    try:
        uri = resolve_uri(TrackingSpec(uri=tracking_uri))
        check_readable(uri)
    except ValidationError as exc:
        _fail(f"--tracking-uri: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", EXIT_CONFIG)
    except ConfigError as exc:  # e.g. credentials in MLFLOW_TRACKING_URI, no store there
        _fail(str(exc), EXIT_CONFIG)
    except TrackingError as exc:
        _fail(str(exc), EXIT_RUNTIME)
    return uri


@app.command()
def status(
    run_id: Annotated[str, typer.Argument(help="MLflow run id (printed by churn submit).")],
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="Tracking store (default as in "
                                                                               "train).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the run has ended.")] = False,
    poll: Annotated[float, typer.Option("--poll", min=0.1, help="Seconds between checks with --wait.")] = 5.0,
) -> None:
    """The stage a train run is in and how it ended, from MLflow: the model version it registered,
    the champion, the threshold and the test ROC AUC. Exit code 1 when it failed.

    A RUNNING run whose driver stopped beating (killed without a word) is marked FAILED."""
    from churn.tracking.run_state import NoSuchRun, fail_if_lost, run_status

    uri = _readable_store(tracking_uri)
    shown: str | None = None
    with contextlib.ExitStack() as stack:
        spinner = stack.enter_context(console.status("")) if wait and console.is_terminal else None
        while True:
            try:
                st = fail_if_lost(uri, run_status(uri, run_id))
            except NoSuchRun:
                _fail(f"no run {run_id} in the tracking store {uri}", EXIT_CONFIG)
            except Exception as exc:  # noqa: BLE001 - MLflow's errors of a store that fails under the read
                _fail(f"cannot read run {run_id} from {uri}: {getattr(exc, 'message', exc)}", EXIT_RUNTIME)
            if st.done or not wait:
                break
            line = summary.waiting_line(st)
            if spinner is not None:
                spinner.update(Text(line))
            elif line.split(",")[0] != shown:  # not a terminal: one line per stage
                _say("waiting:", "dim", line)
                shown = line.split(",")[0]
            time.sleep(poll)
    out = _out()
    out.print(summary.status_table(st, out.width))
    if st.status in ("FAILED", "KILLED"):
        raise typer.Exit(EXIT_RUNTIME)


@app.command()
def score(job: JobArg, cluster: ClusterOpt = None, scheduler: SchedulerOpt = None, set_: SetOpt = None,
          verbose: VerboseOpt = False) -> None:
    """Score CSV data (larger than memory) with a registered model, block by block on the cluster."""
    _logging(verbose)
    spec, cluster_spec = _load(job, set_, cluster, scheduler, load_score_job)
    with _gc_paused():
        from churn.jobs import score as score_job

    res = _on_cluster(cluster_spec, scheduler,
                      _timed(lambda client: score_job.run(spec, client), "score", lambda res: res.seconds),
                      preflight=lambda: score_job.preflight(spec),
                      choose=lambda cluster: score_job.cluster_for(spec, cluster))
    out = _out()
    out.print(summary.score_table(spec, res, out.width))


@app.command()
def monitor(job: JobArg, cluster: ClusterOpt = None, scheduler: SchedulerOpt = None, set_: SetOpt = None,
            verbose: VerboseOpt = False) -> None:
    """Compare a new batch (larger than memory, label optional) with the model's training profile:
    feature and prediction drift, performance when labelled. Exit code 3 when a threshold is crossed."""
    _logging(verbose)
    spec, cluster_spec = _load(job, set_, cluster, scheduler, load_monitor_job)
    from churn.jobs import monitor as monitor_job

    res = _on_cluster(cluster_spec, scheduler, lambda client: monitor_job.run(spec, client),
                      preflight=lambda: monitor_job.preflight(spec))
    out = _out()
    out.print(summary.monitor_table(spec, res, out.width))
    if res.drift.alerts:
        raise typer.Exit(EXIT_DRIFT)


@app.command()
def serve(
    model_uri: Annotated[str, typer.Option("--model-uri", "-m", help="Model to serve.")] =
    "models:/customer-churn@champion",
    host: Annotated[str, typer.Option("--host", help="Interface to bind (loopback unless told).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535)] = 5001,
    workers: Annotated[int, typer.Option("--workers", min=1)] = 1,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="Registry to resolve models:/ "
                                                                               "from (default as in train).")] = None,
    ssl_certfile: Annotated[Optional[Path], typer.Option("--ssl-certfile", help="TLS certificate (PEM).")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option("--ssl-keyfile", help="TLS private key (PEM).")] = None,
) -> None:
    """Serve the registered model over HTTP with MLflow's own scoring app (POST /invocations).

    Rows are checked against the table's rules: a row ingest would quarantine gets HTTP 400
    naming the row, column, value and rule, never a score. A body over churn.serve.max-body gets
    413; every response names the model version served (X-Churn-Model-Version)."""
    import tempfile

    from churn.config import TrackingSpec
    from churn.config.job import credential_in
    from churn.jobs import serve as serve_job
    from churn.tracking.store import TrackingError, check_reachable, resolve_uri

    if (ssl_certfile is None) != (ssl_keyfile is None):
        _fail("give --ssl-certfile and --ssl-keyfile together", EXIT_CONFIG)
    try:
        uri = resolve_uri(TrackingSpec(uri=tracking_uri))
    except ValidationError as exc:
        _fail(f"--tracking-uri: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", EXIT_CONFIG)
    except ConfigError as exc:  # e.g. credentials in MLFLOW_TRACKING_URI
        _fail(str(exc), EXIT_CONFIG)
    secret = credential_in(model_uri)
    if secret:  # it would be printed below and passed on a command line
        _fail(f"--model-uri holds a credential ({secret}): remove it and set it in the environment instead",
              EXIT_CONFIG)
    try:
        check_reachable(uri)
    except TrackingError as exc:
        _fail(str(exc), EXIT_RUNTIME)
    warning = serve_job.exposure_warning(host, tls=ssl_certfile is not None)
    if warning:
        _say("warning:", "bold yellow", warning)
    with tempfile.TemporaryDirectory(prefix="churn-serve-") as tmp:
        try:
            # the one place the model is resolved (pinned to a version, copied to tmp) and loaded
            model = serve_job.resolve(model_uri, uri, Path(tmp))
            app_ = serve_job.load(model)
        except ConfigError as exc:
            _fail(str(exc), EXIT_CONFIG)
        except serve_job.ServeError as exc:
            _fail(str(exc), EXIT_RUNTIME)
        scheme = "https" if ssl_certfile else "http"
        console.print(Text(f"serving {model_uri} (version {model.version}) from {uri} on "
                           f"{scheme}://{host}:{port}/invocations"), highlight=False, soft_wrap=True)
        ssl = {"ssl_certfile": str(ssl_certfile), "ssl_keyfile": str(ssl_keyfile)} if ssl_certfile else {}
        with _signals():
            try:
                serve_job.run(app_, model, host, port, workers, ssl)
            except (KeyboardInterrupt, Terminated):
                pass


def _verified_model(model_uri: str, tracking_uri: str, into: Path | None = None) -> Any:
    """The registered model's files checked against the registry's digests (one line otherwise)."""
    import mlflow

    from churn.tracking.store import TrackingError
    from churn.tracking.verify import verified_model

    mlflow.set_tracking_uri(tracking_uri)
    try:
        return verified_model(model_uri, into)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
    except TrackingError as exc:
        _fail(str(exc), EXIT_RUNTIME)


@app.command()
def verify(
    model_uri: Annotated[str, typer.Argument(help="Registered model: models:/NAME@ALIAS or models:/NAME/VERSION.")],
    into: Annotated[Optional[Path], typer.Option("--into", help="Keep the checked copy in this new or empty "
                                                                "folder (to serve it from there).")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option("--tracking-uri", help="Registry (default as in "
                                                                               "train).")] = None,
) -> None:
    """Check every file of a registered model against the sha256 digests recorded when it was
    registered, without running any of its code (exit 2 and one line naming a file on a mismatch).

    Stock ``mlflow models serve -m models:/…`` trusts the artifact store; serve the --into copy instead."""
    uri = _readable_store(tracking_uri)
    if into is not None:
        if into.exists() and (not into.is_dir() or any(into.iterdir())):
            _fail(f"--into: {into} is not an empty folder", EXIT_CONFIG)
        into.mkdir(parents=True, exist_ok=True)
    checked = _verified_model(model_uri, uri, into)
    typer.echo(f"{model_uri}: version {checked.version} of {checked.name}, every file matches its recorded sha256"
               + (f"; checked copy in {checked.path}" if into is not None else ""))


@app.command()
def graph(job: JobArg, set_: SetOpt = None) -> None:
    """Print the job's stage graph (ingest → split → search per family → … → register) as Mermaid."""
    spec = _load_job(job, set_)
    from churn.jobs.graph import to_mermaid, train_graph

    typer.echo(to_mermaid(train_graph(spec)), nl=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
