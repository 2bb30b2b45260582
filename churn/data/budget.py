"""The bad-row budget of a job that reads a batch of CSV rows (``data.max_bad_fraction``).

Ingest checks it on its manifest (:meth:`churn.data.manifest.Manifest.check_budget`); batch
scoring and monitoring check it here, on the counts their block tasks return.
"""

from __future__ import annotations

from churn.data.manifest import IngestError


def check_bad_rows(what: str, read: int, quarantined: int, reasons: dict[str, int], max_bad_fraction: float) -> None:
    """Refuse a batch whose share of quarantined rows is above ``max_bad_fraction``: one line with
    the counts and the reasons."""
    if read and quarantined / read > max_bad_fraction:
        by_reason = ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1]))
        raise IngestError(f"{what}: bad-row budget exceeded: {quarantined:,} of {read:,} rows "
                          f"({quarantined / read:.2%}) failed validation, budget is {max_bad_fraction:.2%} "
                          f"(data.max_bad_fraction); by reason: {by_reason}")
