"""Stable 64-bit hashing of ids and keys, vectorised with NumPy (same result on any machine)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TEXT_SEED = np.uint64(0x63687572_6E6B6579)  # "churnkey"


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective, well-spread mix of 64-bit values."""
    with np.errstate(over="ignore"):
        x = (np.asarray(x, dtype=np.uint64) + _GOLDEN).astype(np.uint64)
        x = (x ^ (x >> np.uint64(30))) * _M1
        x = (x ^ (x >> np.uint64(27))) * _M2
        return x ^ (x >> np.uint64(31))


_FEW = 16  # ids still being hashed below which a Python loop beats NumPy calls on tiny arrays
_MASK = (1 << 64) - 1


def _mix_words(h: int, tail: np.ndarray) -> int:
    """``h`` mixed with each 8-byte word of ``tail`` (zero-padded), as :func:`mix64` does, in Python
    ints: for a lone 100 KB id, 12,500 words take 5 ms this way and 150 ms as one-row NumPy calls."""
    buf = np.zeros(max(8, -(-len(tail) // 8) * 8), np.uint8)
    buf[:len(tail)] = tail
    golden, m1, m2 = int(_GOLDEN), int(_M1), int(_M2)
    for word in buf.view("<u8").tolist():
        x = ((h ^ word) + golden) & _MASK
        x = ((x ^ (x >> 30)) * m1) & _MASK
        x = ((x ^ (x >> 27)) * m2) & _MASK
        h = x ^ (x >> 31)
    return h


def hash_text(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 hash of each string: its length, then its bytes 8 at a time (the last word zero-
    padded; an empty string is one zero word), through mix64.

    Each string's hash depends on that string alone, not on the others in the array. Works on
    Arrow's buffers directly (no Python strings); nulls hash like ''. Memory is a few words per
    row whatever the longest string: the rows are walked one 8-byte word at a time, longest first,
    so a 100 KB id costs its own words, not a row of that width for every string.
    """
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    values = values.cast(pa.string())
    n = len(values)
    if n == 0:
        return np.zeros(0, np.uint64)
    bufs = values.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32, count=n + 1, offset=values.offset * 4).astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    if values.null_count:
        lengths = np.where(values.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    h = mix64(lengths.astype(np.uint64) ^ _TEXT_SEED)
    if lengths.min() == lengths.max():  # fixed-width ids (the common case): a reshape, no gather
        length = int(lengths[0])
        matrix = np.zeros((n, max(8, -(-length // 8) * 8)), np.uint8)  # the ids' own bytes, padded
        matrix[:, :length] = data[offsets[0]:offsets[0] + n * length].reshape(n, length)
        for word in matrix.view("<u8").T:
            h = mix64(h ^ word)
        return h
    words = np.maximum(1, -(-lengths // 8))
    order = np.argsort(-words, kind="stable")  # longest first: the rows with a word j are a prefix
    with_word = np.searchsorted(-words[order], -np.arange(int(words.max())), side="left")
    padded = np.concatenate([data, np.zeros(8, np.uint8)])  # a gather may read up to 7 bytes past the end
    lanes = np.arange(8)
    for j, m in enumerate(with_word.tolist()):
        rows = order[:m]
        if m <= _FEW:  # a few long ids left: their remaining words in plain Python
            for r in rows.tolist():
                h[r] = _mix_words(int(h[r]), data[offsets[r] + 8 * j:offsets[r] + lengths[r]])
            break
        left = lengths[rows] - 8 * j  # this row's bytes from word j on
        chunk = padded[(offsets[rows] + 8 * j)[:, None] + lanes]
        chunk[lanes >= left[:, None]] = 0
        h[rows] = mix64(h[rows] ^ chunk.view("<u8")[:, 0])
    return h
