"""The ``churn`` command line: specs in, one typed config object into each job."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from churn.config import ClusterSpec, ConfigError, JobSpec, load_cluster, load_job

app = typer.Typer(help="Customer-churn model training that scales out on Dask.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """Customer-churn model training that scales out on Dask."""

EXIT_CONFIG = 2  # a spec, an input file or an argument is wrong; nothing was started
EXIT_RUNTIME = 1  # something failed while running (cluster, tracking, data budget)

JobArg = Annotated[Path, typer.Argument(help="Job spec (YAML): what to run.")]
ClusterOpt = Annotated[Optional[Path], typer.Option("--cluster", help="Cluster spec (YAML) for a LocalCluster.")]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="Address of an existing Dask scheduler.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a job key: --set search.cv=3.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        datefmt="[%X]", handlers=[RichHandler(console=console, show_path=False)], force=True)
    _quiet_libraries()


def _quiet_libraries() -> None:
    """Keep library chatter out of the progress log (called again after distributed loads)."""
    for noisy in ("distributed", "mlflow", "alembic", "urllib3", "fsspec", "asyncio", "tornado", "skops"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str, code: int) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _cluster(cluster: Path | None, scheduler: str | None) -> ClusterSpec | None:
    if cluster is not None and scheduler is not None:
        _fail("give --cluster or --scheduler, not both", EXIT_CONFIG)
    if scheduler is not None:
        return None
    default = Path("cluster/local.yaml")
    if cluster is None and not default.is_file():
        return ClusterSpec()
    return load_cluster(cluster or default)


def _load(job: Path, set_: list[str] | None, cluster: Path | None, scheduler: str | None
          ) -> tuple[JobSpec, ClusterSpec | None]:
    try:
        return load_job(job, set_ or []), _cluster(cluster, scheduler)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)
        raise  # unreachable: _fail exits


def _on_cluster(spec: JobSpec, cluster_spec: ClusterSpec | None, scheduler: str | None,
                work: Callable[[Any], Any], preflight: Callable[[], None] | None = None) -> Any:
    """Check headers (and ``preflight``), then run ``work(client)``; errors become one message."""
    from churn.cluster import ClusterError, cluster_client
    from churn.ingest import IngestError, SchemaDriftError, check_headers
    from churn.tracking import TrackingError

    _quiet_libraries()
    try:
        check_headers(spec.data.paths(), spec.table)
        if preflight is not None:
            preflight()
        with cluster_client(cluster_spec, address=scheduler) as client:
            return work(client)
    except (ConfigError, SchemaDriftError) as exc:
        _fail(str(exc), EXIT_CONFIG)
    except (ClusterError, IngestError, TrackingError) as exc:
        _fail(str(exc), EXIT_RUNTIME)


@app.command()
def ingest(job: JobArg, cluster: ClusterOpt = None, scheduler: SchedulerOpt = None, set_: SetOpt = None,
           force: Annotated[bool, typer.Option("--force", help="Rebuild even when inputs are unchanged.")] = False,
           verbose: VerboseOpt = False) -> None:
    """Validate CSV files into a partitioned Parquet dataset plus a quarantine and a manifest."""
    _logging(verbose)
    spec, cluster_spec = _load(job, set_, cluster, scheduler)
    from churn.ingest import ingest as run_ingest

    ds = _on_cluster(spec, cluster_spec, scheduler, lambda client: run_ingest(spec, client, force=force))
    man = ds.manifest
    table = Table(title=f"churn ingest: {spec.name}", show_header=False)
    rows = [("dataset", f"{ds.root}{' (reused)' if ds.reused else ''}"),
            ("files / bytes", f"{len(man['files'])} / {sum(f['size'] for f in man['files']):,}"),
            ("partitions", f"{man['partitions']}"),
            ("rows read", f"{man['rows_read']:,}"),
            ("rows kept", f"{man['rows_kept']:,}"),
            ("rows quarantined", f"{man['rows_quarantined']:,}"),
            ("duplicates removed", f"{man['duplicates_removed']:,}")]
    rows += [(f"  quarantined: {k}", f"{v:,}") for k, v in man["quarantined_by_reason"].items()]
    rows.append(("seconds", f"{man['seconds']:.1f}"))
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)


@app.command()
def generate(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Number of data rows in all.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the CSV files into.")],
    files: Annotated[int, typer.Option("--files", min=1, help="Number of CSV files.")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same bytes.")] = 0,
    dirty: Annotated[float, typer.Option("--dirty", min=0.0, max=0.49,
                                         help="Fraction of rows given a known fault.")] = 0.0,
    verbose: VerboseOpt = False,
) -> None:
    """Write synthetic Telco-shaped churn CSVs (streamed; expected fault counts in expected.json)."""
    _logging(verbose)
    from churn.generate import generate as run_generate

    try:
        result = run_generate(out, rows, files, seed, dirty)
    except OSError as exc:
        _fail(f"cannot write to {out}: {exc}", EXIT_RUNTIME)
    Console().print(f"wrote {result.rows:,} rows to {len(result.files)} file(s) in {out}; "
                    f"expected counts in {out / 'expected.json'}", highlight=False)


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
    from churn.schema_infer import infer_columns, schema_yaml

    try:
        guesses = infer_columns(str(file), rows)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas parser errors are ValueErrors
        _fail(f"{file}: cannot read it as CSV: {exc}", EXIT_CONFIG)
    typer.echo(schema_yaml(guesses), nl=False)


@app.command()
def train(job: JobArg, cluster: ClusterOpt = None, scheduler: SchedulerOpt = None, set_: SetOpt = None,
          verbose: VerboseOpt = False) -> None:
    """Ingest, split, search, evaluate and register a churn model."""
    _logging(verbose)
    spec, cluster_spec = _load(job, set_, cluster, scheduler)
    from churn import train as train_job
    from churn.tracking import check_reachable, resolve_uri, ui_hint

    t0 = time.perf_counter()
    result = _on_cluster(spec, cluster_spec, scheduler,
                         lambda client: train_job.run(spec, client, job_file=str(job)),
                         preflight=lambda: check_reachable(resolve_uri(spec.tracking)))

    out = Console(width=max(100, Console().width))
    fams = Table(title=f"churn train: {spec.name} — search ({spec.search.engine}, {spec.search.strategy})")
    for col in ("family", "imbalance", "candidates", "fits", f"CV {spec.search.scoring}", "seconds", "best params"):
        fams.add_column(col, overflow="fold")
    from churn.model import imbalance_used

    for fam, res in result.families.items():
        mark = " (champion)" if fam == result.champion else ""
        fams.add_row(fam + mark, imbalance_used(fam, spec.model.imbalance), str(res.n_candidates), str(res.n_fits),
                     f"{res.best_score:.4f}", f"{res.seconds:.1f}",
                     ", ".join(f"{k.removeprefix('model__')}={v}" for k, v in res.best_params.items()))
    out.print(fams)
    table = Table(title="data, champion and test split", show_header=False)
    m = result.test.metrics
    man = result.dataset.manifest
    econ = spec.evaluation.economics
    for key, value in [
        ("rows read / kept / quarantined / duplicates",
         f"{man['rows_read']:,} / {man['rows_kept']:,} / {man['rows_quarantined']:,} / {man['duplicates_removed']:,}"),
        ("train rows (search rows) / test rows",
         f"{result.rows['train']:,} ({result.rows['search']:,}) / {result.rows['test']:,}"),
        ("test ROC AUC / PR AUC / Brier / log loss",
         f"{m['roc_auc']:.4f} / {m['pr_auc']:.4f} / {m['brier']:.4f} / {m['log_loss']:.4f}"),
        ("precision at top 10 %", f"{m.get('precision_at_10pct', float('nan')):.3f}"),
        ("decision threshold (profit) / F1 threshold",
         f"{result.threshold:.3f} (from {result.threshold_source}) / {m.get('f1_threshold', float('nan')):.3f}"),
        ("campaign at threshold", f"contact {m['contacted_fraction']:.1%} of customers, expected profit "
         f"{m.get('profit', 0):,.0f} vs {m.get('profit_contact_all', 0):,.0f} contacting all "
         f"(value {econ.customer_value:g}, offer {econ.offer_cost:g}, contact {econ.contact_cost:g}, "
         f"acceptance {econ.acceptance_rate:g})"),
        ("features kept by the champion", f"{len(result.kept_features)}"),
        ("registered model", f"{result.model_uri} (version {result.model_version})"),
        ("MLflow run", result.run_id),
        ("wall time", f"{time.perf_counter() - t0:.1f}s"),
    ]:
        table.add_row(key, value)
    out.print(table)
    out.print(f"MLflow UI: {ui_hint(result.tracking_uri)}", highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
