"""The ingest job: CSV files → validated Parquet dataset, quarantine and manifest. Wiring only."""

from __future__ import annotations

from distributed import Client

from churn.config import JobSpec
from churn.data.ingest import Dataset, check_headers, check_output_folder, ingest


def preflight(job: JobSpec) -> None:
    """Every check that needs no cluster: the source files, their headers, the output folder."""
    check_headers(job.data.paths(), job.table, job.data.encoding)
    check_output_folder(job)


def run(job: JobSpec, client: Client, *, force: bool = False) -> Dataset:
    """Ingest ``job``'s data on ``client``'s cluster."""
    return ingest(job, client, force=force)
