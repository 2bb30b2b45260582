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
    # reason codes per customer in the scores (reason_<i>_column, _value, _contribution); 0: none (default:
    # TreeSHAP on a tree ensemble costs about as much again as the scoring)
    reasons: int = Field(0, ge=0, le=10)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _id_apart(self) -> ScoreSpec:
        problem = score_id_problem(self.table)  # None: the model's table, checked in churn.jobs.score
        if problem:
            raise ValueError(problem)
        return self


def score_id_problem(table: TableSchema | None) -> str | None:
    """Why ``table``'s id cannot be a column of the scores (it is named like one churn writes), or None."""
    if table is not None and table.id in SCORE_COLUMNS:
        return (f"schema.id {table.id!r} is a column churn writes in the scores ({', '.join(SCORE_COLUMNS)}): "
                "rename it in the source files")
    return None
