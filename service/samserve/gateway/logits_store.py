"""Refinement sessions: the low-res logits of a Segment's masks kept server-side, so the next
round names the previous round's mask (Prompt.mask_input_id) instead of sending 256x256
floats back. In Redis (every replica sees them) for logits_ttl_s; where Redis is off or
failing, in this process (bounded bytes, same lifetime), and then only this replica knows
the id. Ids are 128 random bits: one client cannot name another's logits by guessing."""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
import time
from collections import OrderedDict

import numpy as np

from samserve.core.errors import InvalidInput, NotFound, Overloaded
from samserve.gateway.backends.redis_cache import RedisCache

ID_PATTERN = re.compile(r"[0-9a-f]{32}")
_HEADER = struct.Struct("<II")  # height, width; then float32 little-endian, C order


def encode(logits: np.ndarray) -> bytes:
    h, w = logits.shape
    return _HEADER.pack(h, w) + np.ascontiguousarray(logits, dtype="<f4").tobytes()


def decode(value: bytes) -> np.ndarray | None:
    if len(value) < _HEADER.size:
        return None
    h, w = _HEADER.unpack_from(value)
    if len(value) != _HEADER.size + 4 * h * w:
        return None  # damaged: as if expired
    return np.frombuffer(value, dtype="<f4", offset=_HEADER.size).reshape(h, w).astype(np.float32)


class LogitsStore:
    def __init__(self, cache: RedisCache | None, ttl_s: int, local_bytes: int) -> None:
        self.cache = cache
        self.ttl_s = ttl_s
        self.local_bytes = local_bytes
        self._local: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expires at, value)
        self._held = 0

    @staticmethod
    def _key(model_id: str, logits_id: str) -> str:
        return f"samserve:logits:{model_id}:{logits_id}"

    def _keep_locally(self, key: str, value: bytes) -> None:
        now = time.monotonic()
        old = self._local.pop(key, None)
        if old is not None:
            self._held -= len(old[1])
        self._local[key] = (now + self.ttl_s, value)
        self._held += len(value)
        while self._local and (self._held > self.local_bytes or next(iter(self._local.values()))[0] < now):
            _, (_, old) = self._local.popitem(last=False)  # the oldest first: LRU by insertion, TTL
            self._held -= len(old)

    def _local_value(self, key: str) -> bytes | None:
        entry = self._local.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    async def put_many(self, model_id: str, logits: list[np.ndarray]) -> list[str]:
        """Keeps each (L, L) array; their ids, in order."""
        ids = [secrets.token_hex(16) for _ in logits]
        values = [encode(x) for x in logits]
        keys = [self._key(model_id, i) for i in ids]
        stored = [False] * len(keys)
        if self.cache is not None:
            stored = await asyncio.gather(
                *(self.cache.set(k, v, self.ttl_s) for k, v in zip(keys, values, strict=True))
            )
        local = [key for key, ok in zip(keys, stored, strict=True) if not ok]
        for key, value, ok in zip(keys, values, stored, strict=True):
            if not ok:  # no Redis, or it failed: this replica keeps them
                self._keep_locally(key, value)
        if any(key not in self._local for key in local):
            raise Overloaded(
                f"keep_low_res_logits: {len(local)} masks' logits do not fit the {self.local_bytes} bytes this "
                "gateway keeps without Redis (logits_local_bytes); ask for fewer masks or fix Redis"
            )
        return ids

    async def get(self, model_id: str, logits_id: str, field: str) -> np.ndarray:
        if not ID_PATTERN.fullmatch(logits_id):
            raise InvalidInput(f"{field}: {logits_id[:40]!r} is not a low_res_logits_id (32 lowercase hex characters)")
        key = self._key(model_id, logits_id)
        value = self._local_value(key)
        if value is None and self.cache is not None:
            value = await self.cache.read(key, f"{field}'s kept logits")
        logits = None if value is None else decode(value)
        if logits is None:
            raise NotFound(
                f"{field}: {logits_id} is not kept (expired after {self.ttl_s} s, made by another model, or kept by "
                "another replica while Redis was away); send the logits as mask_input"
            )
        return logits
