"""The ``churn`` command (Typer): ``train``, ``ingest``, ``generate``, ``schema infer``."""

from churn.cli.app import app, main

__all__ = ["app", "main"]
