"""The typed job spec: what data, which schema, how to split, search, evaluate and track.

Validating a job imports neither scikit-learn nor imbalanced-learn: family names and grid
rules come from the :mod:`churn.config.families` leaf; checks that need the estimators run in
the preflight (:mod:`churn.modeling.preflight`), still before any cluster starts.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from churn.config.errors import ConfigError
from churn.config.families import FAMILY_NAMES, check_grid_shape, rules
from churn.config.features import name_groups


def has_credentials(uri: str) -> bool:
    """Does ``uri`` carry ``user:password@`` (or ``user@``) before its host?"""
    return "://" in uri and "@" in uri.split("://", 1)[1].split("/", 1)[0]


class Strict(BaseModel):
    """A spec section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------------- schema
class NumericRule(Strict):
    """Validation rule for one numeric column."""

    integer: bool = False
    nullable: bool = False  # blank cells become missing values (imputed in the pipeline)
    min: float | None = None
    max: float | None = None


class CategoricalRule(Strict):
    """Validation rule for one categorical column."""

    values: list[str] | None = None  # allowed levels; None accepts any
    nullable: bool = False


class TableSchema(Strict):
    """What the churn table looks like."""

    id: str | None = None  # entity id; None derives a stable row key from the row content
    label: str
    positive: str
    negative: str
    numeric: dict[str, NumericRule] = Field(default_factory=dict)
    categorical: dict[str, CategoricalRule] = Field(default_factory=dict)
    ignore: list[str] = Field(default_factory=list)  # columns read but not used as features

    @field_validator("positive", "negative", mode="before")
    @classmethod
    def _label_text(cls, v: Any) -> Any:
        """A 0/1 label written unquoted in YAML (``positive: 1``) means the text the CSV holds."""
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("numeric", mode="before")
    @classmethod
    def _numeric_list(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {name: {} for name in v}
        return {k: ({} if r is None else r) for k, r in v.items()} if isinstance(v, dict) else v

    @field_validator("categorical", mode="before")
    @classmethod
    def _categorical_list(cls, v: Any) -> Any:
        if isinstance(v, list):
            return {name: {} for name in v}
        if isinstance(v, dict):
            return {k: ({"values": r} if isinstance(r, list) else ({} if r is None else r))
                    for k, r in v.items()}
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> TableSchema:
        seen: dict[str, str] = {}
        groups = {"numeric": list(self.numeric), "categorical": list(self.categorical),
                  "ignore": self.ignore, "label": [self.label], "id": [self.id] if self.id else []}
        for group, names in groups.items():
            for name in names:
                if name in seen:
                    raise ValueError(f"column {name!r} is listed under both {seen[name]} and {group}")
                seen[name] = group
        if not self.numeric and not self.categorical:
            raise ValueError("declare at least one numeric or categorical feature column")
        return self

    @property
    def features(self) -> list[str]:
        return list(self.numeric) + list(self.categorical)

    def sum_groups(self) -> dict[str, list[str]]:
        """The sums the numeric column names imply (:func:`~churn.config.features.name_groups`). A
        new name avoids every column and every one-hot column the declared levels give
        (``<column>_<level>``, as scikit-learn's ``OneHotEncoder`` names them)."""
        onehot = [f"{c}_{v}" for c, rule in self.categorical.items()
                  for v in [*(rule.values or []), "infrequent_sklearn"]]
        return name_groups(list(self.numeric), [*self.features, *onehot])

    @property
    def columns(self) -> list[str]:
        """Every column the source files must carry."""
        cols = ([self.id] if self.id else []) + self.features + self.ignore + [self.label]
        return cols


# --------------------------------------------------------------------------- job parts
class DataSpec(Strict):
    source: str  # path, glob or fsspec URL of CSV files
    blocksize: str | int | None = None  # bytes per partition; None reads churn.ingest.blocksize
    output: str = "build/datasets"  # where validated Parquet datasets are written
    encoding: str = "utf-8"  # text encoding of the CSV files; lines not valid in it are quarantined
    max_bad_fraction: float = Field(0.05, ge=0, le=1)

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        ascii_bytes = b'\n\r,"azAZ09 '  # files are cut into blocks and lines at these bytes
        try:
            same = ascii_bytes.decode(v) == ascii_bytes.decode("ascii")
        except UnicodeDecodeError:
            same = False
        if not same:  # UTF-16, UTF-32, EBCDIC, ...
            raise ValueError(f"encoding {v!r} is not supported: churn reads encodings that write ASCII as ASCII "
                             "(UTF-8, latin-1, cp1252, ...); convert the files to UTF-8 first (e.g. iconv -f "
                             f"{v} -t UTF-8)")
        return v

    def paths(self) -> list[str]:
        """Expand ``source`` into concrete files; raise if it matches nothing."""
        if "://" in self.source and not self.source.startswith("file://"):
            import fsspec

            fs, _, found = fsspec.get_fs_token_paths(self.source)
            found = sorted(found)
            protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
            found = [f"{protocol}://{p}" if "://" not in p else p for p in found]
        else:
            src = self.source.removeprefix("file://")
            found = sorted(glob.glob(src)) if glob.has_magic(src) else ([src] if os.path.exists(src) else [])
            folders = [f for f in found if os.path.isdir(f)]
            if folders:
                raise ConfigError(f"data.source: {folders[0]} is a directory, not a CSV file "
                                  f"(matched by {self.source!r})")
        if not found:
            raise ConfigError(f"data.source: no CSV file at {self.source!r}")
        return found


class SplitSpec(Strict):
    test: float = Field(0.2, gt=0, lt=1)
    validation: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _sum(self) -> SplitSpec:
        if self.test + self.validation >= 1:
            raise ValueError("split.test + split.validation must be below 1")
        return self


class SelectionSpec(Strict):
    """Feature selection steps; each list is searched as part of the grid."""

    correlation_threshold: list[float | None] = Field(default_factory=lambda: [None])  # |r| above: drop one
    importance_threshold: list[float | str | None] = Field(default_factory=lambda: [None])  # e.g. "median"


class ModelSpec(Strict):
    """Which model families to search, how to handle class imbalance, and the grids."""

    families: list[str] = Field(default_factory=lambda: list(FAMILY_NAMES), min_length=1)
    # searched like a hyper-parameter: one mode or a list (families.IMBALANCE_MODES); smotenc only alone
    imbalance: list[Literal["none", "class_weight", "smote", "smotenc"]] = Field(
        default_factory=lambda: ["none", "class_weight", "smote"], min_length=1)
    grids: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)  # family -> grid; missing: default
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    max_rows: dict[str, int | None] = Field(default_factory=dict)  # family -> training rows per fit (null: all);
    # a family not listed uses its default (families.FamilyRules.max_rows: svm 4,000)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"  # auto: lowest cross-fitted Brier
    ensemble: int = Field(3, ge=0)  # a stack of up to N families (forward selection) competes (0 or 1: none)
    finalize: bool = True  # refit the champion on every labelled row before registering it
    # sums of numeric columns whose names end in the same word (day/eve/night charge → sum_charge):
    # auto keeps them when CV of gradient boosting on the training rows gains from them; true, false
    feature_sums: Literal["auto"] | bool = "auto"

    @property
    def feature_sums_mode(self) -> str:
        """``feature_sums`` as text: auto, on or off."""
        return self.feature_sums if isinstance(self.feature_sums, str) else ("on" if self.feature_sums else "off")

    @field_validator("imbalance", mode="before")
    @classmethod
    def _one_or_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _known(self) -> ModelSpec:
        unknown = [f for f in [*self.families, *self.grids, *self.max_rows] if f not in FAMILY_NAMES]
        if unknown:
            raise ValueError(f"unknown model family {unknown[0]!r}; choose from {', '.join(FAMILY_NAMES)}")
        for fam, grid in self.grids.items():
            check_grid_shape(fam, grid)
        if "smotenc" in self.imbalance and len(self.imbalance) > 1:
            raise ValueError("model.imbalance: smotenc cannot be searched with other modes (its pipeline "
                             "resamples before encoding); list it alone")
        if len(set(self.imbalance)) != len(self.imbalance):
            raise ValueError("model.imbalance lists a mode twice")
        bad = [f for f, n in self.max_rows.items() if n is not None and n < 50]
        if bad:
            raise ValueError(f"model.max_rows.{bad[0]} must be at least 50 (or null for every row)")
        return self

    def row_cap(self, family: str) -> int | None:
        """Training rows per fit for ``family``: the job's ``max_rows`` entry, else the family default."""
        return self.max_rows[family] if family in self.max_rows else rules(family).max_rows


class SearchSpec(Strict):
    cv: int = Field(5, ge=2)
    scoring: str = "roc_auc"  # also the metric that picks the champion family (checked by the preflight)
    max_rows: int = Field(200_000, ge=100)
    strategy: Literal["grid", "halving"] = "grid"
    engine: Literal["churn", "sklearn"] = "churn"  # churn: shared folds + tree prefixes; sklearn: joblib dask
    reuse: bool = True  # a rerun with the same data, spec and code reuses the last search's results
    # CV repeats the champion is chosen on: the search's folds, then (repeats - 1) fresh splits on
    # which each family's best candidate is scored again (a grid's best score on its own folds is optimistic)
    repeats: int = Field(2, ge=1, le=10)


class EconomicsSpec(Strict):
    """Retention campaign economics used to pick the decision threshold."""

    customer_value: float = Field(500.0, ge=0)  # value kept when a would-be churner stays
    offer_cost: float = Field(50.0, ge=0)  # incentive paid to each contacted customer who accepts
    contact_cost: float = Field(5.0, ge=0)  # cost of each contact
    acceptance_rate: float = Field(0.3, ge=0, le=1)  # share of contacted customers who accept


class EvaluationSpec(Strict):
    economics: EconomicsSpec = Field(default_factory=EconomicsSpec)
    top_k: list[float] = Field(default_factory=lambda: [0.05, 0.1, 0.2])  # precision at top k of scores
    permutation_rows: int = Field(1000, ge=50)  # rows used for permutation importance
    plots: bool = True


class TrackingSpec(Strict):
    uri: str | None = None  # None: MLFLOW_TRACKING_URI, else a local SQLite store
    experiment: str = "customer-churn"
    registered_model: str = "customer-churn"
    alias: str = "champion"

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        """Credentials come from the environment only: a spec is shared, logged and committed."""
        if value and has_credentials(value):
            raise ValueError("the tracking URI holds credentials: remove them and set MLFLOW_TRACKING_USERNAME "
                             "and MLFLOW_TRACKING_PASSWORD in the environment instead")
        return value


class JobSpec(Strict):
    """One training job: what data, which schema, how to split, search and track."""

    name: str = "train"
    seed: int = 42
    data: DataSpec
    table: TableSchema = Field(alias="schema")
    split: SplitSpec = Field(default_factory=SplitSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def sums_to_try(self) -> dict[str, list[str]]:
        """The feature sums this job may use: the table's name groups, none with ``feature_sums: false``."""
        return {} if self.model.feature_sums is False else self.table.sum_groups()


