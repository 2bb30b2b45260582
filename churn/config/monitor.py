"""The typed monitor job spec: which model, which new batch, and what counts as drift."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from churn.config.job import DataSpec, ModelUri, Strict, TableSchema, TrackingSpec


class ThresholdSpec(Strict):
    """Crossing any of these makes ``churn monitor`` exit with code 3 (null switches one off)."""

    psi: float | None = Field(0.2, gt=0)  # per feature
    prediction_psi: float | None = Field(0.2, gt=0)  # the model's scores
    roc_auc_drop: float | None = Field(0.05, gt=0)  # below the reference (realised, or estimated without labels)
    brier_rise: float | None = Field(0.03, gt=0)  # above the reference (labelled batches)
    # rows quarantined for one reason in one column (an unseen level, an out-of-range number),
    # as a share of the rows read
    quarantined: float | None = Field(0.01, gt=0)
    # labelled rows (all or a slice): a score decile whose realised churn rate is this far from the
    # calibrated probabilities' (and beyond sampling noise) is calibration drift, and the label-free
    # performance estimate is not trusted for the batch
    calibration_gap: float | None = Field(0.05, gt=0, le=1)


class MonitorSpec(Strict):
    """Monitoring: a new batch (label optional) is profiled on the cluster and compared with the
    reference profile stored with the model version at train time. Rows are checked with the
    rules logged with the model; ``schema`` may be left out, and when given its rules must be the
    model's."""

    name: str = "monitor"
    model_uri: ModelUri = "models:/customer-churn@champion"
    data: DataSpec
    table: TableSchema | None = Field(None, alias="schema")  # None: the table logged with the model
    thresholds: ThresholdSpec = Field(default_factory=ThresholdSpec)
    report: str = "build/monitoring"  # the HTML report and drift.json land in a folder here
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
