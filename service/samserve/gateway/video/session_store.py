"""Video sessions in the state Redis (the Redis that evicts nothing): any replica continues a
session, and a gateway that dies loses nothing written.

Per session (keys under samserve:video:<session id>):
- `meta`: JSON: the session's facts (model, mode, frames, version, bytes held) and the tracking
  state's skeleton (core.video_state_codec), rewritten on every change;
- `outputs`: a hash of frame outputs by id (core.video_state_codec.encode_output); a tracked
  frame adds its objects' outputs, a WINDOW session deletes what it dropped, in one transaction
  with the skeleton that names them;
- `sources`: a hash of what the frames were made from (the video file, or each frame's image
  bytes): a frame's embedding is recomputed from it when the cache has lost it;
- `lock`: held by the call working on the session (one at a time: a second is Busy);
- `cancel`: set by CancelPropagation, read by the propagation between frames.
Every call refreshes the session's expiry (video_session_ttl_s); samserve:video:sessions (a
sorted set by expiry) counts the live sessions over every replica.

The state last written is also kept in this process (at most video_local_bytes, least recently
used first out) and used while the Redis copy's version is the same, so a session's calls on one
replica read only its small meta value.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field

from samserve.core.errors import Busy, InvalidInput, NotFound, Overloaded
from samserve.core.video_memory import FrameOutput
from samserve.core.video_state_codec import (
    CorruptState,
    decode_output,
    encode_output,
    referenced,
    restore,
    skeleton,
)
from samserve.core.video_tracking import TrackingState
from samserve.gateway.backends.redis_cache import RedisCache

log = logging.getLogger(__name__)

PREFIX = "samserve:video:"
SESSIONS = PREFIX + "sessions"
WINDOW, FULL = "window", "full"
VIDEO_SOURCE = "video"  # the sources hash's field of a session made from one video file


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_EXTEND = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
)


def _key(session_id: str, part: str) -> str:
    return f"{PREFIX}{session_id}:{part}"


def new_session_id() -> str:
    return secrets.token_hex(16)


def check_session_id(session_id: str) -> None:
    if not session_id:
        raise InvalidInput("session_id is required (StartVideoSession's answer)")
    if len(session_id) != 32 or any(c not in "0123456789abcdef" for c in session_id):
        raise InvalidInput(f"session_id {session_id[:64]!r} is not a session id (32 lowercase hex characters)")


@dataclass
class SessionMeta:
    session_id: str
    model_id: str
    model_name: str
    mode: str  # WINDOW or FULL
    ttl_s: int
    created_unix: float
    height: int = 0  # the video's size, from its first frame (0: no frame yet)
    width: int = 0
    frame_ids: list[str] = field(default_factory=list)  # each frame's id in the embedding cache
    source: str = "images"  # "video": the frames come from one video file; "images": each its own
    version: int = 0
    next_uid: int = 0
    source_bytes: int = 0
    output_bytes: dict[str, int] = field(default_factory=dict)  # uid -> its value's bytes
    expires_unix: float = 0.0

    @property
    def bytes_held(self) -> int:
        return self.source_bytes + sum(self.output_bytes.values())


@dataclass
class LoadedSession:
    meta: SessionMeta
    state: TrackingState
    by_uid: dict[int, FrameOutput] = field(default_factory=dict)  # what each stored output id holds
    saved_with_memory: set[int] = field(default_factory=set)

    @property
    def nbytes(self) -> int:
        return self.meta.bytes_held


class SessionStore:
    def __init__(self, redis: RedisCache, ttl_s: int, max_sessions: int, local_bytes: int, lock_ttl_s: float) -> None:
        self.redis = redis
        self.ttl_s, self.max_sessions = ttl_s, max_sessions
        self.local_bytes, self.lock_ttl_s = local_bytes, lock_ttl_s
        self._local: OrderedDict[str, LoadedSession] = OrderedDict()

    # ---- local copies ----------------------------------------------------------------------

    def _keep(self, loaded: LoadedSession) -> None:
        sid = loaded.meta.session_id
        self._local[sid] = loaded
        self._local.move_to_end(sid)
        while self._local and sum(s.nbytes for s in self._local.values()) > self.local_bytes:
            self._local.popitem(last=False)

    def forget(self, session_id: str) -> None:
        self._local.pop(session_id, None)

    # ---- lifecycle -------------------------------------------------------------------------

    async def check_capacity(self) -> None:
        """RESOURCE_EXHAUSTED when video_max_sessions are live (over every replica)."""
        now = time.time()

        async def live(r):
            await r.zremrangebyscore(SESSIONS, "-inf", now)
            return await r.zcard(SESSIONS)

        if await self.redis.strict("counting video sessions", live) >= self.max_sessions:
            raise Overloaded(
                f"{self.max_sessions} video sessions are live (video_max_sessions): close one, or retry when one "
                "expires"
            )

    async def create(self, meta: SessionMeta, sources: dict[str, bytes]) -> LoadedSession:
        """A new session (RESOURCE_EXHAUSTED when video_max_sessions are live)."""
        await self.check_capacity()
        meta.source_bytes = sum(len(v) for v in sources.values())
        loaded = LoadedSession(meta, TrackingState(len(meta.frame_ids), meta.height, meta.width))
        await self.save(loaded, sources=sources)
        return loaded

    async def load(self, session_id: str) -> LoadedSession:
        """The session's state: NotFound when it is unknown or expired."""
        check_session_id(session_id)
        raw = await self.redis.strict("reading a video session", lambda r: r.get(_key(session_id, "meta")))
        if raw is None:
            self.forget(session_id)
            raise NotFound(f"video session {session_id} is unknown or expired (sessions expire when idle)")
        try:
            doc = json.loads(raw)
            meta = SessionMeta(**doc["meta"])
        except (ValueError, TypeError, KeyError) as exc:
            raise NotFound(f"video session {session_id} is damaged ({exc}); start another") from None
        local = self._local.get(session_id)
        if local is not None and local.meta.version == meta.version:
            self._local.move_to_end(session_id)
            return local
        sk = doc["skeleton"]
        uids = sorted(referenced(sk))
        values = []
        if uids:
            values = await self.redis.strict(
                "reading a video session's memories",
                lambda r: r.hmget(_key(session_id, "outputs"), [str(u) for u in uids]),
            )
        try:
            if any(v is None for v in values):
                raise CorruptState("an output the session names is missing")
            by_uid = {u: decode_output(v) for u, v in zip(uids, values, strict=True)}
            state = restore(sk, by_uid)
        except CorruptState as exc:
            raise NotFound(f"video session {session_id} is damaged ({exc}); start another") from None
        saved = {u for u, o in by_uid.items() if o.maskmem_features is not None}
        loaded = LoadedSession(meta, state, by_uid, saved)
        self._keep(loaded)
        return loaded

    async def save(self, loaded: LoadedSession, sources: dict[str, bytes] | None = None) -> None:
        """Writes what changed (new outputs, outputs given their memory, the skeleton), deletes
        what no longer is referenced, refreshes the expiry: one transaction."""
        meta, state = loaded.meta, loaded.state
        uid_of = {id(o): u for u, o in loaded.by_uid.items()}
        writes: dict[str, bytes] = {}
        kept: dict[int, FrameOutput] = {}
        for obj in state.objects:
            for kind in ("cond", "non_cond", "temp_cond", "temp_non_cond"):
                for out in getattr(obj, kind).values():
                    uid = uid_of.get(id(out))
                    if uid is None:
                        uid = meta.next_uid
                        meta.next_uid += 1
                        uid_of[id(out)] = uid
                    kept[uid] = out
                    stale = uid not in loaded.by_uid or (
                        out.maskmem_features is not None and uid not in loaded.saved_with_memory
                    )
                    if stale:
                        writes[str(uid)] = encode_output(out)
                        meta.output_bytes[str(uid)] = len(writes[str(uid)])
        removed = [u for u in loaded.by_uid if u not in kept]
        for u in removed:
            meta.output_bytes.pop(str(u), None)
        meta.version += 1
        meta.expires_unix = time.time() + meta.ttl_s
        doc = json.dumps({"meta": asdict(meta), "skeleton": skeleton(state, uid_of)}, separators=(",", ":"))
        sid, ttl = meta.session_id, meta.ttl_s

        async def write(r):
            async with r.pipeline(transaction=True) as p:
                p.set(_key(sid, "meta"), doc, ex=ttl)
                if writes:
                    p.hset(_key(sid, "outputs"), mapping=writes)
                if removed:
                    p.hdel(_key(sid, "outputs"), *[str(u) for u in removed])
                if sources:
                    p.hset(_key(sid, "sources"), mapping=sources)
                p.expire(_key(sid, "outputs"), ttl)
                p.expire(_key(sid, "sources"), ttl)
                p.zadd(SESSIONS, {sid: meta.expires_unix})
                await p.execute()

        await self.redis.strict("writing a video session", write)
        loaded.by_uid = kept
        loaded.saved_with_memory = {u for u, o in kept.items() if o.maskmem_features is not None}
        self._keep(loaded)

    async def source(self, session_id: str, field_name: str) -> bytes | None:
        return await self.redis.strict(
            "reading a video session's frames", lambda r: r.hget(_key(session_id, "sources"), field_name)
        )

    async def delete(self, session_id: str) -> bool:
        check_session_id(session_id)
        self.forget(session_id)

        async def drop(r):
            async with r.pipeline(transaction=True) as p:
                p.delete(*(_key(session_id, k) for k in ("meta", "outputs", "sources", "cancel")))
                p.zrem(SESSIONS, session_id)
                return (await p.execute())[0]

        return bool(await self.redis.strict("closing a video session", drop))

    # ---- one call at a time ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def working(self, session_id: str, what: str) -> AsyncIterator[None]:
        """Holds the session's lock while the call works (renewed; Busy when another holds it)."""
        check_session_id(session_id)
        key, token, ttl = _key(session_id, "lock"), uuid.uuid4().hex, self.lock_ttl_s
        ms, value = int(ttl * 1000), f"{token} {what}"
        got = await self.redis.strict("locking a video session", lambda r: r.set(key, value, nx=True, px=ms))
        if not got:
            holder = await self.redis.strict("locking a video session", lambda r: r.get(key))
            doing = holder.decode(errors="replace").split(" ", 1)[-1] if holder else "another call"
            raise Busy(
                f"video session {session_id} is busy ({doing} is running on it): wait for it to end, or cancel a "
                "propagation with CancelPropagation"
            )

        async def renew() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                with contextlib.suppress(Exception):
                    await self.redis.strict(
                        "renewing a video session's lock", lambda r: r.eval(_EXTEND, 1, key, value, ms)
                    )

        keeper = asyncio.create_task(renew())
        try:
            yield
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            with contextlib.suppress(Exception):
                await self.redis.strict("unlocking a video session", lambda r: r.eval(_RELEASE, 1, key, value))

    async def cancel(self, session_id: str) -> None:
        check_session_id(session_id)
        await self.redis.strict("cancelling a propagation", lambda r: r.set(_key(session_id, "cancel"), b"1", ex=120))

    async def take_cancel(self, session_id: str) -> bool:
        """Whether a cancellation was asked for (and clears it)."""

        async def take(r):
            async with r.pipeline(transaction=True) as p:
                p.get(_key(session_id, "cancel"))
                p.delete(_key(session_id, "cancel"))
                return (await p.execute())[0]

        return bool(await self.redis.strict("reading a cancellation", take))

    async def clear_cancel(self, session_id: str) -> None:
        await self.redis.strict("clearing a cancellation", lambda r: r.delete(_key(session_id, "cancel")))
