"""Train/validation/test assignment by a hash of the row key: per partition, no shuffle.

A row's split depends only on its key (entity id hash), the seed and the fractions, so the
same customer lands in the same split across reruns and when new files are appended.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churn.config import SplitSpec
from churn.hashing import mix64
from churn.validate import KEY_COLUMN

SPLIT_COLUMN = "_split"
SPLITS = ("train", "validation", "test")

def uniform_from_keys(keys: np.ndarray, seed: int, salt: int = 0) -> np.ndarray:
    """A deterministic uniform [0, 1) number per key for this seed (and salt)."""
    seed_mix = mix64(np.array([seed * 1_000_003 + salt], dtype=np.uint64))[0]
    x = mix64(np.asarray(keys, dtype=np.uint64) ^ seed_mix)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def assign_split(keys: np.ndarray, spec: SplitSpec, seed: int) -> np.ndarray:
    """'test', 'validation' or 'train' per key."""
    u = uniform_from_keys(keys, seed)
    return np.where(u < spec.test, "test", np.where(u < spec.test + spec.validation, "validation", "train"))


def with_split(frame: pd.DataFrame, spec: SplitSpec, seed: int) -> pd.DataFrame:
    """One partition with its ``_split`` column added."""
    return frame.assign(**{SPLIT_COLUMN: pd.array(assign_split(frame[KEY_COLUMN].to_numpy(), spec, seed),
                                                  dtype="string")})
