"""The typed job spec: what data, which schema, how to split, search, evaluate and track.

Validating a job imports neither scikit-learn nor imbalanced-learn: family names and grid
rules come from the :mod:`churn.config.families` leaf; checks that need the estimators run in
the preflight (:mod:`churn.modeling.preflight`), still before any cluster starts.
"""

from __future__ import annotations

import glob
import os
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from churn.config.errors import ConfigError, cut, shown
from churn.config.families import DEFAULT_FAMILIES, FAMILY_NAMES, check_grid_shape, rules
from churn.config.features import name_groups

# query parameters that carry a secret (API tokens, S3 and GCS pre-signed URLs, Azure SAS), any case;
# urllib.parse reads the URL, but no library we use lists which parameter names are credentials
SECRET_PARAMETER = re.compile(r"token|secret|passw|pwd|signature|credential|api[-_]?key|access[-_]?key|private[-_]?key"
                              r"|^key$|^sig$|^auth$|^authorization$", re.IGNORECASE)
# the columns churn adds to a dataset, its quarantine and its samples (churn.data.columns and the
# literals of churn.data; this layer cannot import them, tests/config/test_load.py checks they agree)
RESERVED_COLUMNS = frozenset({"_key", "_label", "_split", "_reasons", "_source", "_line", "_raw", "_u"})


def reserved_column(names: list[str]) -> str | None:
    """Why the first of ``names`` that churn uses for its own columns cannot be a source column;
    None when none is."""
    for name in names:
        if name in RESERVED_COLUMNS:
            return (f"column {shown(name)} has a name churn gives its own columns "
                    f"({', '.join(sorted(RESERVED_COLUMNS))}): rename it in the source files")
    return None


def credential_in(uri: str, *, user: bool = True) -> str | None:
    """What in ``uri`` is a credential, named without its value: a password before the host (or,
    with ``user``, a user name alone), or a query parameter such as ``token`` or ``X-Amz-Signature``.
    None when nothing is. Each part of an fsspec chain (``simplecache::s3://...``) is looked at."""
    from urllib.parse import parse_qsl, urlsplit

    for part in uri.split("::"):
        if "://" not in part:
            continue
        try:
            url = urlsplit(part)
        except ValueError:  # e.g. an unbalanced [ in the host: no query to read, only what precedes the path
            before_path = part.split("://", 1)[1].split("/", 1)[0]
            return "a user name or password before the host" if "@" in before_path else None
        userinfo = url.netloc.rpartition("@")[0]
        if ":" in userinfo:
            return "a password before the host"
        if userinfo and user:
            return "a user name before the host"
        for name, _ in parse_qsl(url.query, keep_blank_values=True):
            if SECRET_PARAMETER.search(name.strip()):
                return f"the query parameter {shown(name)}"
    return None


def has_credentials(uri: str) -> bool:
    """Does ``uri`` carry ``user:password@`` (or ``user@``) before its host, or a credential-looking
    query parameter (:func:`credential_in`)?"""
    return credential_in(uri) is not None


def refuse_credentials(key: str, uri: str | None, *, user: bool = True, instead: str) -> str | None:
    """``uri`` unless it holds a credential; then a one-line error naming ``key`` and what the
    credential is, never its value (a spec is shared, logged and committed)."""
    what = credential_in(uri, user=user) if uri else None
    if what:
        raise ValueError(f"{key} holds a credential ({what}): remove it and {instead}")
    return uri


def _model_uri(value: str) -> str:
    return refuse_credentials("the model URI", value, instead=(
        "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or the artifact store's own variables "
        "(AWS_ACCESS_KEY_ID, ...), in the environment instead")) or value


ModelUri = Annotated[str, AfterValidator(_model_uri)]  # where score and monitor load the model from


class Strict(BaseModel):
    """A spec section: unknown keys are errors, and every number is finite (no metric, rule or
    threshold can use an infinity or a NaN)."""

    model_config = ConfigDict(extra="forbid", frozen=False, allow_inf_nan=False)


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
        reserved = reserved_column([name for names in groups.values() for name in names])
        if reserved:
            raise ValueError(reserved)
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

    @field_validator("source")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        """A password or token in the source would reach the progress log, the manifest and the run."""
        return refuse_credentials("the source", value, user=False, instead=(
            "give it to fsspec in the environment instead (FSSPEC_<PROTOCOL>_<OPTION> variables, or a file in "
            "~/.config/fsspec)"))

    @field_validator("blocksize")
    @classmethod
    def _byte_size(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            block_bytes(value, "")
        return value

    @model_validator(mode="after")
    def _blocksize_setting(self) -> DataSpec:
        """The ``churn.ingest.blocksize`` setting (``DASK_CHURN__INGEST__BLOCKSIZE``) is read when the
        spec leaves ``blocksize`` out: a bad one is refused now, not after the cluster starts."""
        if self.blocksize is None:
            from churn.config.settings import setting

            block_bytes(setting("ingest.blocksize"), " (the churn.ingest.blocksize setting, which the "
                        "environment variable DASK_CHURN__INGEST__BLOCKSIZE overrides)")
        return self

    @model_validator(mode="after")
    def _id_limit_setting(self) -> DataSpec:
        """The ``churn.ingest.max-id-bytes`` setting (``DASK_CHURN__INGEST__MAX_ID_BYTES``) is read
        in every block task: a bad one is refused now, not as a worker's raw ValueError."""
        from churn.config.settings import setting

        raw = setting("ingest.max-id-bytes")
        whole = (isinstance(raw, int) and not isinstance(raw, bool)) or (isinstance(raw, str) and raw.isdigit())
        if not whole or int(raw) < 1:
            raise ValueError(f"the churn.ingest.max-id-bytes setting (which the environment variable "
                             f"DASK_CHURN__INGEST__MAX_ID_BYTES overrides) is {shown(raw)}, not a whole number of "
                             "bytes of at least 1")
        return self

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        if codecs.lookup(v).name in ("utf-16", "utf-32"):  # with a byte-order mark: read whole, transcoded
            return v
        ascii_bytes = b'\n\r,"azAZ09 '  # files are cut into blocks and lines at these bytes
        try:
            same = ascii_bytes.decode(v) == ascii_bytes.decode("ascii")
        except UnicodeDecodeError:
            same = False
        if not same:  # UTF-16-LE without a byte-order mark, EBCDIC, ...
            raise ValueError(f"encoding {v!r} is not supported: churn reads encodings that write ASCII as ASCII "
                             "(UTF-8, latin-1, cp1252, ...) and utf-16 or utf-32 files that start with a "
                             f"byte-order mark; convert the files to UTF-8 first (e.g. iconv -f {v} -t UTF-8)")
        return v

    def paths(self) -> list[str]:
        """Expand ``source`` into concrete files; raise if it matches nothing."""
        if "://" in self.source and not self.source.startswith("file://"):
            import fsspec

            try:
                fs, _, found = fsspec.get_fs_token_paths(self.source)
            except (ImportError, ValueError, OSError) as exc:  # a backend not installed, a store that refuses
                raise ConfigError(f"data.source: cannot list {shown(self.source)}: {cut(str(exc))}") from None
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
            # a named pipe, socket or device (reading its header would block or never end), a broken link
            special = [f for f in found if not os.path.isfile(f)]
            if special:
                raise ConfigError(f"data.source: {special[0]} is not a regular file (a named pipe, socket, device "
                                  f"or broken link), so it cannot be read in blocks; copy the data to a file")
        if not found:
            raise ConfigError(f"data.source: no CSV file at {self.source!r}")
        return found


def block_bytes(value: str | int, where: str) -> int:
    """``value`` (``32MiB``, ``4000000``) in bytes, as dask reads it; a ValueError naming it otherwise."""
    from dask.utils import parse_bytes

    try:
        n = int(parse_bytes(value))
    except (ValueError, TypeError):
        raise ValueError(f"blocksize {shown(value)}{where} is not a byte size such as 32MiB or 4000000") from None
    if n < 1:
        raise ValueError(f"blocksize {shown(value)}{where} must be at least one byte")
    return n


AUTO_VALIDATION_SHARE = 0.10  # split.validation auto, on a table larger than search.max_rows: this share ...
AUTO_VALIDATION_ROWS = 1_000_000  # ... of the labelled rows, at most this many


class SplitSpec(Strict):
    """Fractions of the labelled rows, assigned by a hash of each row's key (the test split's rows
    depend only on ``test`` and the seed). ``validation: auto`` is resolved once the row count is
    known (:meth:`resolved`)."""

    test: float = Field(0.2, gt=0, lt=1)
    validation: Literal["auto"] | Annotated[float, Field(ge=0, lt=1)] = "auto"

    @model_validator(mode="after")
    def _sum(self) -> SplitSpec:
        if self.test + self.fraction(0, 1) >= 1:
            raise ValueError("split.test + split.validation must be below 1")
        return self

    def fraction(self, labelled: int, max_rows: int) -> float:
        """The validation fraction for a table of ``labelled`` rows and a search sample of
        ``max_rows``: the number given, or with ``auto`` none while the train split fits in the
        sample (those tables keep the out-of-fold path, which uses every train row), else
        :data:`AUTO_VALIDATION_SHARE` of the rows, at most :data:`AUTO_VALIDATION_ROWS`, as long as the
        train split left stays larger than the sample (or none). The train job also gives none when it
        has no xgboost family (no full-data fit to stop early or choose)."""
        if self.validation != "auto":
            return float(self.validation)
        if labelled * (1 - self.test) <= max_rows:
            return 0.0
        share = min(AUTO_VALIDATION_SHARE, AUTO_VALIDATION_ROWS / labelled)
        return share if labelled * (1 - self.test - share) > max_rows else 0.0

    def resolved(self, labelled: int, max_rows: int) -> SplitSpec:
        """This spec with ``validation`` a number (:meth:`fraction`)."""
        return SplitSpec(test=self.test, validation=self.fraction(labelled, max_rows))


class SelectionSpec(Strict):
    """Feature selection steps; each list is searched as part of the grid."""

    correlation_threshold: list[float | None] = Field(default_factory=lambda: [None])  # |r| above: drop one
    importance_threshold: list[float | str | None] = Field(default_factory=lambda: [None])  # e.g. "median"


class ModelSpec(Strict):
    """Which model families to search, how to handle class imbalance, and the grids."""

    families: list[str] = Field(default_factory=lambda: list(DEFAULT_FAMILIES), min_length=1)
    # searched like a hyper-parameter: one mode or a list (families.IMBALANCE_MODES); smotenc only alone
    imbalance: list[Literal["none", "class_weight", "smote", "smotenc"]] = Field(
        default_factory=lambda: ["none", "class_weight", "smote"], min_length=1)
    grids: dict[str, dict[str, list[Any]]] = Field(default_factory=dict)  # family -> grid; missing: default
    selection: SelectionSpec = Field(default_factory=SelectionSpec)
    max_rows: dict[str, int | None] = Field(default_factory=dict)  # family -> training rows per fit (null: all);
    # a family not listed uses its default (families.FamilyRules.max_rows: svm 4,000)
    calibration: Literal["auto", "sigmoid", "isotonic", "none"] = "auto"  # auto: lowest cross-fitted Brier
    ensemble: int = Field(3, ge=0)  # a stack of up to N families (forward selection) competes (0 or 1: none)
    finalize: bool = True  # refit the champion on every labelled row before registering it (not bagged members)
    # serve each member as the mean of its k fold models of the first fresh CV repeat (search.repeats >= 2),
    # whose out-of-fold scores fit the stack, calibration and threshold; auto: when CV says it does not hurt
    # (churn.modeling.calibrate.bagging_choice); true. Default false until its time and quality are measured
    bagging: Literal["auto"] | bool = False
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

    @field_validator("top_k")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        """Each k is a fraction of the rows, and its metric is named by whole percent
        (``precision_at_5pct``): k of 0 would still score the top row, and two k of the same percent
        would log one metric over the other."""
        names: dict[int, float] = {}
        for k in value:
            if not 0.01 <= k <= 1:  # below 1 % the name would say 0 %
                raise ValueError(f"{k!r} is not a fraction of the rows between 0.01 and 1 (0.1: the top 10 %)")
            pct = round(100 * k)
            if pct in names:
                raise ValueError(f"{names[pct]!r} and {k!r} are both the top {pct} % (the metric's name)")
            names[pct] = k
        return value


class TrackingSpec(Strict):
    uri: str | None = None  # None: MLFLOW_TRACKING_URI, else a local SQLite store
    experiment: str = "customer-churn"
    registered_model: str = "customer-churn"
    alias: str = "champion"

    @field_validator("uri")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        """Credentials come from the environment only: a spec is shared, logged and committed."""
        return refuse_credentials("the tracking URI", value, instead=(
            "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the "
            "environment instead"))


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

    @model_validator(mode="after")
    def _bagging_needs_a_fresh_repeat(self) -> JobSpec:
        if self.model.bagging is True and self.search.repeats < 2:
            raise ValueError("model.bagging: true serves the fold models of the first fresh CV repeat: set "
                             "search.repeats to 2 or more (or model.bagging to auto or false)")
        return self

    def sums_to_try(self) -> dict[str, list[str]]:
        """The feature sums this job may use: the table's name groups, none with ``feature_sums: false``."""
        return {} if self.model.feature_sums is False else self.table.sum_groups()


