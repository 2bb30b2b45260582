"""The typed score job spec: which model scores which data, and where the scores go."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from churn.config.job import DataSpec, Strict, TableSchema, TrackingSpec


class ScoreSpec(Strict):
    """Batch scoring: rows are checked with the table's schema (label optional) and scored."""

    name: str = "score"
    model_uri: str = "models:/customer-churn@champion"
    data: DataSpec
    table: TableSchema = Field(alias="schema")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
