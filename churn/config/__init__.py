"""The config layer: typed specs, family names and grid rules, library settings.

The bottom layer: it imports nothing else from churn, and no scikit-learn.
"""

from churn.config.cluster import (
    AddressSpec,
    ClusterSpec,
    KubernetesSpec,
    LocalClusterSpec,
    SlurmSpec,
    SSHSpec,
    TLSSpec,
    XGBoostSpec,
)
from churn.config.errors import ConfigError
from churn.config.job import (
    CategoricalRule,
    DataSpec,
    EconomicsSpec,
    EvaluationSpec,
    JobSpec,
    ModelSpec,
    NumericRule,
    SearchSpec,
    SelectionSpec,
    SplitSpec,
    TableSchema,
    TrackingSpec,
)
from churn.config.load import apply_overrides, load_cluster, load_job, load_monitor_job, load_score_job
from churn.config.monitor import MonitorSpec, ThresholdSpec
from churn.config.score import ScoreSpec
from churn.config.settings import setting

__all__ = [
    "AddressSpec", "CategoricalRule", "ClusterSpec", "KubernetesSpec", "LocalClusterSpec", "SlurmSpec", "SSHSpec",
    "TLSSpec", "XGBoostSpec", "ConfigError", "DataSpec", "EconomicsSpec", "EvaluationSpec", "JobSpec",
    "ModelSpec", "MonitorSpec", "NumericRule", "ScoreSpec", "SearchSpec", "SelectionSpec", "SplitSpec",
    "TableSchema", "ThresholdSpec", "TrackingSpec", "apply_overrides", "load_cluster", "load_job",
    "load_monitor_job", "load_score_job", "setting",
]
