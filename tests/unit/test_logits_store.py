"""The refinement sessions' store without Redis: bounded bytes, TTL, ids that cannot be
mixed across models, and a clear refusal when a request's logits cannot be kept."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from samserve.core.errors import InvalidInput, NotFound, Overloaded
from samserve.gateway.logits_store import LogitsStore, decode, encode


def run(coro):
    return asyncio.run(coro)


def test_round_trip_and_model_isolation():
    store = LogitsStore(None, ttl_s=60, local_bytes=1 << 20)
    x = np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 7
    (i,) = run(store.put_many("model-a", [x]))
    assert np.array_equal(run(store.get("model-a", i, "f")), x)
    with pytest.raises(NotFound):
        run(store.get("model-b", i, "f"))
    with pytest.raises(InvalidInput):
        run(store.get("model-a", "../etc", "f"))
    assert decode(encode(x)[:-1]) is None  # damaged: as if expired


def test_bytes_are_bounded_oldest_first_and_entries_expire():
    one = 4 * 32 * 32 + 8
    store = LogitsStore(None, ttl_s=1, local_bytes=3 * one)
    ids = [run(store.put_many("m", [np.full((32, 32), k, np.float32)]))[0] for k in range(5)]
    assert store._held == 3 * one
    with pytest.raises(NotFound):
        run(store.get("m", ids[0], "f"))  # dropped: the oldest
    assert run(store.get("m", ids[4], "f"))[0, 0] == 4
    time.sleep(1.1)
    with pytest.raises(NotFound):
        run(store.get("m", ids[4], "f"))


def test_a_request_that_cannot_be_kept_is_refused():
    store = LogitsStore(None, ttl_s=60, local_bytes=1000)
    with pytest.raises(Overloaded, match="logits_local_bytes"):
        run(store.put_many("m", [np.zeros((64, 64), np.float32)]))


def test_a_request_and_a_client_keep_at_most_their_budgets():
    from samserve.gateway.logits_store import kept_bytes
    from samserve.gateway.request_id import CLIENT

    one = kept_bytes(1, 64)
    store = LogitsStore(None, ttl_s=0.3, local_bytes=1 << 30, request_bytes=3 * one, client_bytes=5 * one)
    with pytest.raises(Overloaded, match=r"logits_request_bytes.*logits_client_bytes"):
        store.reserve(4, 64)
    CLIENT.set("a")
    store.reserve(3, 64)
    failed = store.reserve(2, 64)
    with pytest.raises(Overloaded, match=r"this client keeps .*logits_client_bytes.*logits_request_bytes"):
        store.reserve(1, 64)
    CLIENT.set("b")
    store.reserve(3, 64)  # another client's share is its own
    CLIENT.set("a")
    store.release(failed)  # a request that failed keeps nothing
    store.reserve(2, 64)
    time.sleep(0.35)  # what was kept has expired: the client's budget is whole again
    store.reserve(3, 64)
    assert store._by_client == {"a": 3 * one}  # expired counts are dropped, whoever made them
