"""The typed score job spec: which model scores which data, and where the scores go."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from churn.config.job import DataSpec, ModelUri, Strict, TableSchema, TrackingSpec

# the columns churn writes beside the id in the scores (churn.modeling.batch.score_block)
SCORE_COLUMNS = ("probability", "decision", "model_name", "model_version", "scored_at")


class ScoreSpec(Strict):
    """Batch scoring: rows are checked with the rules logged with the model (label optional) and
    scored. ``schema`` may be left out; when given, its rules must be the model's."""

    name: str = "score"
    model_uri: ModelUri = "models:/customer-churn@champion"
    data: DataSpec
    table: TableSchema | None = Field(None, alias="schema")  # None: the table logged with the model
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _id_apart(self) -> ScoreSpec:
        check_id_apart(self.table)
        return self


def check_id_apart(table: TableSchema | None) -> None:
    """The scores hold the id beside :data:`SCORE_COLUMNS`: an id of one of those names would be
    lost, so it is refused (the job's own schema at load, the model's when the job takes it)."""
    if table is not None and table.id in SCORE_COLUMNS:
        raise ValueError(f"schema.id {table.id!r} is a column churn writes in the scores "
                         f"({', '.join(SCORE_COLUMNS)}): rename it in the source files")
