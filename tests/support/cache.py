"""Reading the embedding cache from a test: an Embed is answered before its entry is written
(the write is off the response's path), so a test that reads Redis right after one waits for it."""

from __future__ import annotations

import time


def written(r, key: str, timeout_s: float = 10.0) -> bytes:
    """The value under `key` once the gateway has written it and let its lock go (from then on
    the gateway reads it from Redis too). AssertionError after timeout_s."""
    from samserve.contract import lock_key

    give_up = time.monotonic() + timeout_s
    while (value := r.get(key)) is None or r.exists(lock_key(key)):
        assert time.monotonic() < give_up, f"{key} was never written"
        time.sleep(0.01)
    return value
