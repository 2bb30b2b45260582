"""Train/validation/test assignment by a hash of the row key (per partition, no shuffle), the
row and class counts checked before a search, and the deterministic samples of a split.

A row's split depends only on its key (entity id hash), the seed and the fractions, so the
same customer lands in the same split across reruns and when new files are appended.
"""

from __future__ import annotations

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client

from churn.config import SplitSpec
from churn.data.columns import KEY_COLUMN, LABEL_COLUMN, SPLIT_COLUMN
from churn.data.hashing import mix64

SPLITS = ("train", "validation", "test")


def uniform_from_keys(keys: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """A deterministic uniform [0, 1) number per key for this seed (and salt)."""
    seed_mix = mix64(np.array([seed * 1_000_003 + salt], dtype=np.uint64))[0]
    x = mix64(np.asarray(keys, dtype=np.uint64) ^ seed_mix)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def assign_split(keys: np.ndarray, spec: SplitSpec, seed: int) -> np.ndarray:
    """'test', 'validation' or 'train' per key. A row is 'test' when its number is below ``spec.test``,
    whatever ``spec.validation`` is: the test rows do not move when the validation fraction does."""
    if spec.validation == "auto":
        raise ValueError("split.validation is auto: resolve it first (SplitSpec.resolved, with the labelled row "
                         "count and search.max_rows)")
    u = uniform_from_keys(keys, seed)
    return np.where(u < spec.test, "test", np.where(u < spec.test + spec.validation, "validation", "train"))


def with_split(frame: pd.DataFrame, spec: SplitSpec, seed: int) -> pd.DataFrame:
    """One partition with its ``_split`` column added."""
    return frame.assign(**{SPLIT_COLUMN: pd.array(assign_split(frame[KEY_COLUMN].to_numpy(), spec, seed),
                                                  dtype="string")})


class DataCountError(ValueError):
    """Too few rows, or too few of one class, for the split and the cross-validation asked for."""


def load_splits(data_path: str, spec: SplitSpec, seed: int) -> dd.DataFrame:
    """A clean Parquet dataset as a Dask dataframe with its ``_split`` column (per partition)."""
    return dd.read_parquet(data_path).map_partitions(with_split, spec, seed)


def class_counts(ddf: dd.DataFrame, client: Client) -> dict[str, dict[int, int]]:
    """Rows per split and class, counted on the cluster: ``{"train": {0: n0, 1: n1}, ...}``."""
    counts = client.compute(ddf.groupby([SPLIT_COLUMN, LABEL_COLUMN]).size()).result()
    out: dict[str, dict[int, int]] = {s: {0: 0, 1: 0} for s in SPLITS}
    for (split, label), n in counts.items():
        out[str(split)][int(label)] = int(n)
    return out


def sample_quota(counts: dict[int, int], max_rows: int) -> dict[int, int]:
    """Rows per class in the search sample: all of them up to ``max_rows`` in total, else the
    class ratio kept with at least one row of each class present."""
    total = sum(counts.values())
    if total <= max_rows:
        return dict(counts)
    return {c: min(n, max(1, round(max_rows * n / total))) for c, n in counts.items()}


def check_counts(counts: dict[str, dict[int, int]], *, cv: int, max_rows: int, positive: str, negative: str
                 ) -> None:
    """Enough rows of each class in the training split for ``cv`` stratified folds (after the
    search sample), and both classes in the test split; else one message with the counts."""
    names = {0: repr(negative), 1: repr(positive)}
    train = counts["train"]
    total = sum(train.values())
    described = ", ".join(f"{n:,} {names[c]}" for c, n in sorted(train.items()))
    if total == 0:
        raise DataCountError("the training split is empty: no clean rows to train on")
    searched = sample_quota(train, max_rows)
    short = [c for c, n in sorted(searched.items()) if n < cv]
    if short:
        c = short[0]
        raise DataCountError(
            f"search.cv={cv} needs at least {cv} rows of each class in the training split; it has {described}"
            + (f" ({searched[c]:,} {names[c]} in the search sample of search.max_rows={max_rows:,})"
               if total > max_rows else "")
            + (": the table has one class only" if min(train.values()) == 0 else ""))
    test = counts["test"]
    if min(test.values()) == 0:
        raise DataCountError("the test split needs rows of both classes for ROC AUC; it has "
                             + ", ".join(f"{n:,} {names[c]}" for c, n in sorted(test.items()))
                             + " (raise split.test, or add rows)")


def check_validation_counts(validation: dict[int, int], *, cv: int, positive: str, negative: str) -> None:
    """Enough rows of each class in the validation split for the full-data fit, whose calibration
    map and threshold are cross-fitted there in ``cv`` stratified folds and whose choice is scored
    there; else one message with the counts."""
    if min(validation.values()) >= cv:
        return
    names = {0: repr(negative), 1: repr(positive)}
    raise DataCountError(
        f"the full-data fit is calibrated and chosen on the validation split in search.cv={cv} folds: it needs at "
        f"least {cv} rows of each class there; it has "
        + ", ".join(f"{n:,} {names[c]}" for c, n in sorted(validation.items())) + " (raise split.validation)")


def search_sample(train: dd.DataFrame, max_rows: int, seed: int, client: Client,
                  counts: dict[int, int] | None = None) -> tuple[pd.DataFrame, int]:
    """Training rows for the grid search: all of them, or a stratified sample of ``max_rows``.

    Returns (rows, number of training rows). The sample keeps the class ratio: per class the
    ``k_c`` rows with the smallest per-key hash are taken, so it is deterministic. ``counts``
    (rows per class, e.g. from :func:`class_counts`) saves a pass over the data.
    """
    if counts is None:
        counts = {int(c): int(n) for c, n in client.compute(train[LABEL_COLUMN].value_counts()).result().items()}
    total = sum(counts.values())
    if total <= max_rows:
        return client.compute(train).result().reset_index(drop=True), total
    quota = {c: q for c, q in sample_quota(counts, max_rows).items() if q}
    # per class, rows whose hash is below a threshold with margin; exact cut in the driver
    margin = {c: min(1.0, 1.2 * q / counts[c] + 1e-4) for c, q in quota.items()}

    def _pre(frame: pd.DataFrame) -> pd.DataFrame:
        u = uniform_from_keys(frame[KEY_COLUMN].to_numpy(), seed, salt=1)
        cut = frame[LABEL_COLUMN].map(margin).to_numpy(float)
        return frame.assign(_u=u).loc[u < cut]

    pre = client.compute(train.map_partitions(_pre)).result()
    parts = [g.nsmallest(quota[int(c)], "_u") for c, g in pre.groupby(LABEL_COLUMN)]
    sample = pd.concat(parts).sort_values(KEY_COLUMN, kind="stable").drop(columns="_u")
    return sample.reset_index(drop=True), total


def sample_rows(ddf: dd.DataFrame, total: int, n: int, seed: int, client: Client) -> pd.DataFrame:
    """About ``n`` of the ``total`` rows of ``ddf``, picked by key hash (deterministic), in the driver."""
    if total == 0:
        return ddf._meta
    frac = min(1.0, n / total)
    picked = ddf.map_partitions(lambda f: f.loc[uniform_from_keys(f[KEY_COLUMN].to_numpy(), seed, salt=2) < frac])
    return client.compute(picked).result().reset_index(drop=True)
