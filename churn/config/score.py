"""The typed score job spec: which model scores which data, and where the scores go."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from churn.config.job import DataSpec, Strict, TableSchema, TrackingSpec


class ScoreSpec(Strict):
    """Batch scoring: rows are checked with the rules logged with the model (label optional) and
    scored. ``schema`` may be left out; when given, its rules must be the model's."""

    name: str = "score"
    model_uri: str = "models:/customer-churn@champion"
    data: DataSpec
    table: TableSchema | None = Field(None, alias="schema")  # None: the table logged with the model
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
