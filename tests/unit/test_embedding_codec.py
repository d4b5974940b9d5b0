"""Cache values: round trip, and every kind of damage is detected (a miss, never a wrong answer)."""

from __future__ import annotations

import numpy as np
import pytest

from samserve.core.embedding_codec import CorruptEntry, ImageEmbedding, decode_entry, encode_entry

ENTRY = ImageEmbedding(
    np.random.default_rng(0).normal(size=(1, 256, 4, 4)).astype(np.float16), (300, 451), (170, 256), "m1"
)


def test_round_trip():
    got = decode_entry(encode_entry(ENTRY), "m1")
    np.testing.assert_array_equal(got.embedding, ENTRY.embedding)
    assert (got.original_size, got.input_size, got.model_id) == ((300, 451), (170, 256), "m1")


@pytest.mark.parametrize(
    "damage",
    [
        lambda v: v[:-1],
        lambda v: v[:-2] + bytes([v[-2] ^ 1]) + v[-1:],
        lambda v: b"XX" + v[2:],
        lambda v: v[:10],
        lambda v: b"",
        lambda v: v.replace(b'"float16"', b'"float32"'),
        lambda v: v.replace(b'"shape":[1,256,4,4]', b'"shape":[1,256,4,5]'),
    ],
    ids=["truncated", "bit_flip", "magic", "header_cut", "empty", "dtype", "shape"],
)
def test_damage_is_detected(damage):
    with pytest.raises(CorruptEntry):
        decode_entry(damage(encode_entry(ENTRY)), "m1")


def test_entry_of_another_model_is_refused():
    with pytest.raises(CorruptEntry):
        decode_entry(encode_entry(ENTRY), "m2")
