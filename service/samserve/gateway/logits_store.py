"""Refinement sessions: the low-res logits of a Segment's masks kept server-side, so the next
round names the previous round's mask (Prompt.mask_input_id) instead of sending 256x256
floats back. In Redis (every replica sees them) for logits_ttl_s; where Redis is off or
failing, in this process (bounded bytes, same lifetime), and then only this replica knows
the id. Ids are 128 random bits: one client cannot name another's logits by guessing. What a
request keeps is bounded, and what one client keeps alive through this gateway (request_id.CLIENT),
both refused up front; the local store then holds several clients' sessions, not one's."""

from __future__ import annotations

import asyncio
import re
import secrets
import struct
import time
from collections import OrderedDict, deque

import numpy as np

from samserve.core.errors import InvalidInput, NotFound, Overloaded
from samserve.gateway.backends.redis_cache import RedisCache
from samserve.gateway.request_id import CLIENT

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


def kept_bytes(n_masks: int, side: int) -> int:
    """What keeping n (side, side) logits takes, as stored."""
    return n_masks * (_HEADER.size + 4 * side * side)


class LogitsStore:
    def __init__(
        self,
        cache: RedisCache | None,
        ttl_s: int,
        local_bytes: int,
        request_bytes: int = 1 << 62,
        client_bytes: int = 1 << 62,
    ) -> None:
        self.cache = cache
        self.ttl_s = ttl_s
        self.local_bytes = local_bytes
        self.request_bytes = request_bytes
        self.client_bytes = client_bytes
        self._local: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # key -> (expires at, value)
        self._held = 0
        self._kept: deque[tuple[float, list]] = deque()  # (expires at, [bytes, client]), oldest first
        self._by_client: dict[str, int] = {}  # bytes each client keeps now

    def _expire(self, now: float) -> None:
        """Drops what has expired from the clients' counts (every count is kept for ttl_s, so
        the reservations expire in the order they were made)."""
        while self._kept and self._kept[0][0] < now:
            self.release(self._kept.popleft()[1])

    def reserve(self, n_masks: int, side: int) -> list:
        """Counts a request's logits against its budget and its client's, before any work; the
        reservation to release() should the request fail. Overloaded names both budgets."""
        need = kept_bytes(n_masks, side)
        client = CLIENT.get()
        now = time.monotonic()
        self._expire(now)
        if need > self.request_bytes:
            raise Overloaded(
                f"keep_low_res_logits: {n_masks} masks' logits take {need} bytes, over the {self.request_bytes} one "
                f"request may keep (logits_request_bytes; a client keeps at most {self.client_bytes}, "
                "logits_client_bytes); send fewer prompts or multimask_output=false"
            )
        held = self._by_client.get(client, 0)
        if held + need > self.client_bytes:
            raise Overloaded(
                f"keep_low_res_logits: this client keeps {held} bytes of logits and this request's {need} would pass "
                f"the {self.client_bytes} one client may keep (logits_client_bytes; {self.request_bytes} a request, "
                f"logits_request_bytes); they expire {self.ttl_s} s after they were kept"
            )
        reservation = [need, client]
        self._by_client[client] = held + need
        self._kept.append((now + self.ttl_s, reservation))
        return reservation

    def release(self, reservation: list) -> None:
        """A reservation counts no more (its request failed, or it expired); once only."""
        need, client = reservation
        if not need:
            return
        reservation[0] = 0
        left = self._by_client.pop(client, 0) - need
        if left > 0:
            self._by_client[client] = left

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
