"""Hash split: deterministic per key, the right proportions, independent of partitioning."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pytest

from churn.config import SplitSpec
from churn.data.hashing import hash_text, mix64
from churn.data.split import DataCountError, assign_split, check_validation_counts, uniform_from_keys


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
# (Each is the id's hash alone. Until dataset format 6 an id's hash also depended on the longest
# id hashed with it; blocks whose ids all had the same number of 8-byte words, such as Telco's,
# hashed them as these values, and still do.)
GOLDEN_IDS = ["7590-VHVEG", "5575-GNVDE", "3668-QPYBK", "C00000000042", "", "a-much-longer-customer-identifier-0001"]
GOLDEN_HASHES = [10118192598682301804, 12515272437144841041, 17777371867132669445, 13751487583886764459,
                 9003572476457137725, 13544047923473464658]


def test_id_hashes_are_golden():
    """hash_text of fixed ids gives the same 64-bit values as when the split was first released."""
    assert [int(h) for h in hash_text(pa.array(GOLDEN_IDS))] == GOLDEN_HASHES
    assert [int(x) for x in mix64(np.array([0, 1, 2**63], dtype=np.uint64))] == [
        16294208416658607535, 10451216379200822465, 5196802822362493915]


def test_an_ids_hash_does_not_depend_on_the_ids_beside_it():
    """The same id in blocks whose longest ids differ gets one key (else a repeat across two blocks
    is missed and the customer's split depends on its neighbours); a null hashes like ''."""
    for others in ([], ["x"], ["y" * 100], ["z" * 9, None, "w" * 40]):
        got = hash_text(pa.array([*others, *GOLDEN_IDS, None]))[len(others):]
        assert [int(h) for h in got] == [*GOLDEN_HASHES, GOLDEN_HASHES[GOLDEN_IDS.index("")]]


def test_a_100kb_id_costs_its_own_bytes_not_a_row_of_them_per_id():
    """Hashing 1,000 short ids and one of 100 KB allocates a few MB at most (an n x longest-id byte
    matrix is 100 MB here), and the long id's hash is its own."""
    long_id = "".join(chr(65 + i % 26) for i in range(100_000))
    ids = pa.array([f"{i:06d}" for i in range(1_000)] + [long_id])
    tracemalloc.start()
    try:
        got = hash_text(ids)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6, f"{peak / 1e6:.0f} MB"
    assert int(got[-1]) == int(hash_text(pa.array([long_id]))[0])
    assert int(got[-1]) != int(hash_text(pa.array([long_id[:-1] + "a"]))[0])
    assert [int(h) for h in got[:3]] == [int(hash_text(pa.array([i]))[0]) for i in ("000000", "000001", "000002")]


def test_split_assignment_is_golden():
    """The same keys land in the same splits (and uniforms) for seed 42 as when first released."""
    keys = np.array([6092476257372498569, 1721545636073448682, 3575921827229715769, 11544923240874525796,
                     14867582308406556487, 13544047923473464658], dtype=np.uint64)
    assert assign_split(keys, SplitSpec(test=0.2, validation=0.1), 42).tolist() == [
        "train", "train", "train", "train", "test", "train"]
    np.testing.assert_allclose(uniform_from_keys(keys, 42), [
        0.405546814012, 0.801232780962, 0.606404529531, 0.346013345488, 0.134772795294, 0.821958479335],
        rtol=0, atol=1e-12)


def test_auto_validation_is_none_within_the_sample_and_a_capped_share_above():
    """split.validation auto: none while the train split fits in search.max_rows (the out-of-fold path
    uses every train row); above, 10 % of the labelled rows, at most 1,000,000, and none when taking
    it would bring the train split back within the sample; a number is kept as given."""
    auto = SplitSpec(test=0.2)
    assert auto.validation == "auto"
    assert auto.fraction(7_043, 200_000) == 0.0
    assert auto.fraction(250_000, 200_000) == 0.0  # 200,000 train rows: fits the sample
    assert auto.fraction(280_000, 200_000) == 0.0  # 10 % would leave 196,000 train rows: within the sample
    assert auto.fraction(300_000, 200_000) == 0.1  # 210,000 train rows left
    assert auto.fraction(2_000, 500) == 0.1
    assert auto.fraction(15_000_000, 200_000) == 1_000_000 / 15_000_000  # capped at a million rows
    assert auto.resolved(15_000_000, 200_000) == SplitSpec(test=0.2, validation=1_000_000 / 15_000_000)
    assert SplitSpec(test=0.2, validation=0.05).fraction(15_000_000, 200_000) == 0.05
    with pytest.raises(ValueError, match="split.validation is auto: resolve it first"):
        assign_split(np.arange(10, dtype=np.uint64), auto, 42)


def test_test_rows_do_not_move_when_the_validation_fraction_does():
    """Resolving auto to another fraction changes which rows train and which validate, never the test rows."""
    keys = np.random.default_rng(3).integers(0, 2**63, 50_000, dtype=np.int64).astype(np.uint64)
    splits = [assign_split(keys, SplitSpec(test=0.2, validation=v), 7) for v in (0.0, 0.1, 1 / 15)]
    assert all(((s == "test") == (splits[0] == "test")).all() for s in splits)
    assert ((splits[1] == "validation") & (splits[0] != "train")).sum() == 0  # validation rows come from train
    assert (splits[2] == "validation").sum() < (splits[1] == "validation").sum()


def test_the_full_data_fit_needs_cv_rows_of_each_class_in_validation():
    """Its calibration map and threshold are cross-fitted on the validation split in search.cv folds:
    fewer rows of a class there stop the job with one line and the counts (before the search)."""
    check_validation_counts({0: 900, 1: 5}, cv=5, positive="Yes", negative="No")
    with pytest.raises(DataCountError) as err:
        check_validation_counts({0: 900, 1: 4}, cv=5, positive="Yes", negative="No")
    assert str(err.value) == ("the full-data fit is calibrated and chosen on the validation split in search.cv=5 "
                              "folds: it needs at least 5 rows of each class there; it has 900 'No', 4 'Yes' "
                              "(raise split.validation)")
