"""Hash split: deterministic per key, the right proportions, independent of partitioning."""

from __future__ import annotations

import numpy as np

from churn.config import SplitSpec
from churn.split import assign_split


def test_split_depends_only_on_key_seed_and_fractions():
    """Same keys give the same splits in any order; the seed changes them."""
    keys = np.random.default_rng(0).integers(0, 2**63, 100_000, dtype=np.int64).astype(np.uint64)
    spec = SplitSpec(test=0.2, validation=0.1)
    a = assign_split(keys, spec, seed=1)
    order = np.random.default_rng(1).permutation(len(keys))
    assert (assign_split(keys[order], spec, seed=1) == a[order]).all()
    assert (assign_split(keys, spec, seed=2) != a).mean() > 0.3
    share = {s: (a == s).mean() for s in ("train", "validation", "test")}
    assert abs(share["test"] - 0.2) < 0.01
    assert abs(share["validation"] - 0.1) < 0.01
    assert abs(share["train"] - 0.7) < 0.01
