"""Hash split: deterministic per key, the right proportions, independent of partitioning."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from churn.config import SplitSpec
from churn.data.hashing import hash_text, mix64
from churn.data.split import assign_split, uniform_from_keys


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


# Golden values: the README promises that a customer stays in the same split across runs and
# versions. If one of these changes, every existing split moves: that is a breaking change.
GOLDEN_IDS = ["7590-VHVEG", "5575-GNVDE", "3668-QPYBK", "C00000000042", "", "a-much-longer-customer-identifier-0001"]
GOLDEN_HASHES = [6092476257372498569, 1721545636073448682, 3575921827229715769, 11544923240874525796,
                 14867582308406556487, 13544047923473464658]


def test_id_hashes_are_golden():
    """hash_text of fixed ids gives the same 64-bit values as when the split was first released."""
    assert [int(h) for h in hash_text(pa.array(GOLDEN_IDS))] == GOLDEN_HASHES
    assert [int(x) for x in mix64(np.array([0, 1, 2**63], dtype=np.uint64))] == [
        16294208416658607535, 10451216379200822465, 5196802822362493915]


def test_split_assignment_is_golden():
    """The same ids land in the same splits (and uniforms) for seed 42 as when first released."""
    keys = np.array(GOLDEN_HASHES, dtype=np.uint64)
    assert assign_split(keys, SplitSpec(test=0.2, validation=0.1), 42).tolist() == [
        "train", "train", "train", "train", "test", "train"]
    np.testing.assert_allclose(uniform_from_keys(keys, 42), [
        0.405546814012, 0.801232780962, 0.606404529531, 0.346013345488, 0.134772795294, 0.821958479335],
        rtol=0, atol=1e-12)
