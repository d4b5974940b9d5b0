"""Video tracking sessions: the calls of samserve.v1's video API over the tracking core
(core.video_tracking), the embedding cache (frames) and the state Redis (session_store).

Every call loads the session (the local copy while Redis has no newer one), holds its lock,
works, and writes what changed before it answers: a propagation writes each frame as it is
tracked, so a gateway that dies mid-run leaves the session at its last written frame and any
replica continues from there. A call that fails part-way leaves Redis as it was, and this
gateway's copy is dropped (the next call reads Redis).

Frames are embedded when they are added (a video file's on StartVideoSession, images as AddFrames
streams them), through the embedding cache and its single-flight; a frame whose embedding the
cache has lost is embedded again from what the session keeps of it (its image, or the video
file, decoded to that frame).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from samserve.contract import SAM2_EMBEDDING_CHANNELS, ModelInfo
from samserve.core.errors import (
    BackendUnavailable,
    Cancelled,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    Overloaded,
)
from samserve.core.video_tracking import FrameFeatures, FrameMasks, TrackerConfig, VideoTracker
from samserve.core.video_window import correction_gap, prune, window_gap
from samserve.gateway.deadline import Deadline
from samserve.gateway.embedding_store import EmbeddingStore
from samserve.gateway.settings import Settings
from samserve.gateway.video.session_store import (
    FULL,
    VIDEO_SOURCE,
    WINDOW,
    LoadedSession,
    SessionMeta,
    SessionStore,
    new_session_id,
)
from samserve.gateway.video.tracking_models import TritonTrackingModels
from samserve.gateway.video_file import VideoLimits, decode_frames, probe

log = logging.getLogger(__name__)
FORWARD, BACKWARD, BOTH = "forward", "backward", "both"
REFILL_AHEAD = 16  # frames re-embedded from a video file after one the cache lost
SOURCES_FLUSH_BYTES = 64 << 20  # AddFrames writes its frames' images to Redis every this many bytes


@dataclass(frozen=True)
class SessionView:
    """What a session says about itself (GetSession and every call that changes it)."""

    session_id: str
    model_id: str
    model_name: str
    mode: str
    num_frames: int
    height: int
    width: int
    object_ids: list[int]
    bytes_held: int
    expires_unix: float
    frame_ids: list[str]


@dataclass(frozen=True)
class FrameIn:
    """One frame of AddFrames: image bytes, or the id of a frame embedded before (its frame_id)."""

    image: bytes | None = None
    frame_id: str | None = None


def frame_features(embedding: np.ndarray, no_mem_embed: np.ndarray) -> FrameFeatures:
    """A cached SAM 2 embedding (1, 1024, e, e) float16, packed as the image encoder makes it
    (top level plus no_mem_embed, feat_s1, feat_s0), as the tracker takes it: the raw top level."""
    if embedding.shape[1] != SAM2_EMBEDDING_CHANNELS:
        raise InvalidInput(f"a video frame's embedding must be SAM 2's packed embedding, got {embedding.shape}")
    e = embedding.shape[-1]
    x = embedding[0].astype(np.float32)
    vision = x[:256] - no_mem_embed[:, None, None]
    s1 = x[256:512].reshape(64, 2 * e, 2 * e)
    s0 = x[512:].reshape(32, 4 * e, 4 * e)
    return FrameFeatures(vision, s0, s1)


def view(loaded: LoadedSession) -> SessionView:
    m = loaded.meta
    return SessionView(
        m.session_id,
        m.model_id,
        m.model_name,
        m.mode,
        len(m.frame_ids),
        m.height,
        m.width,
        loaded.state.obj_ids,
        m.bytes_held,
        m.expires_unix,
        list(m.frame_ids),
    )


class VideoSessions:
    def __init__(
        self,
        settings: Settings,
        embeddings: EmbeddingStore,
        store: SessionStore | None,
        model_of: Callable[[str | None], Awaitable[ModelInfo]],
        run_cpu: Callable[..., Awaitable],
    ) -> None:
        self.settings, self.embeddings, self.store = settings, embeddings, store
        self.model_of, self.run_cpu = model_of, run_cpu
        self._configs: dict[str, TrackerConfig] = {}

    # ---- helpers -------------------------------------------------------------------------

    def _store(self) -> SessionStore:
        if self.store is None:
            raise BackendUnavailable("video sessions keep their state in Redis, and this gateway runs without one")
        return self.store

    def limits(self) -> VideoLimits:
        s = self.settings
        return VideoLimits(s.max_request_bytes, s.video_max_frames, s.video_max_frame_pixels, s.video_max_duration_s)

    async def _tracking_model(self, name: str | None) -> tuple[ModelInfo, TrackerConfig]:
        model = await self.model_of(name)
        if not model.can_track:
            raise InvalidInput(
                f"model {model.name!r} ({model.model_id}) does not track video: ListModels says which models can "
                "(SAM 2 models of the CPU repository)"
            )
        config = self._configs.get(model.model_id)
        if config is None:
            config = TrackerConfig.from_json(model.tracker_config)
            self._configs[model.model_id] = config
        return model, config

    async def _session_model(self, meta: SessionMeta) -> tuple[ModelInfo, TrackerConfig]:
        model, config = await self._tracking_model(meta.model_name)
        if model.model_id != meta.model_id:
            raise FailedPrecondition(
                f"video session {meta.session_id} was made with {meta.model_id}; the model named {meta.model_name!r} "
                f"is now {model.model_id}: its memories do not fit another model's, start a new session"
            )
        return model, config

    def _features(self, loaded: LoadedSession, model: ModelInfo, config: TrackerConfig, deadline: Deadline):
        """features(frame) for the tracker: each frame's embedding once a call (the last few kept)."""
        kept: OrderedDict[int, FrameFeatures] = OrderedDict()

        async def features(frame_idx: int) -> FrameFeatures:
            if frame_idx in kept:
                kept.move_to_end(frame_idx)
                return kept[frame_idx]
            entry = await self._frame_embedding(loaded.meta, model, frame_idx, deadline)
            feats = await self.run_cpu(frame_features, entry.embedding, config.no_mem_embed)
            kept[frame_idx] = feats
            while len(kept) > 4:
                kept.popitem(last=False)
            return feats

        return features

    async def _frame_embedding(self, meta: SessionMeta, model: ModelInfo, frame_idx: int, deadline: Deadline):
        frame_id = meta.frame_ids[frame_idx]
        try:
            return await self.embeddings.by_id(frame_id, model, deadline, video=True)
        except NotFound:
            pass
        store = self._store()
        if meta.source == "video":
            data = await store.source(meta.session_id, VIDEO_SOURCE)
            if data is None:
                raise NotFound(f"video session {meta.session_id} lost its video file; start another")
            return await self._refill_from_video(data, meta, model, frame_idx, deadline)
        else:
            frame = await store.source(meta.session_id, str(frame_idx))
            if frame is None:
                raise NotFound(
                    f"frame {frame_idx}'s embedding (frame_id {frame_id}) is no longer cached and the session holds "
                    "no image of it (it was added by id): add the frame's image again in a new session"
                )
        _, entry, _ = await self.embeddings.frame_embedding(frame, model, deadline)
        return entry

    async def _refill_from_video(
        self, data: bytes, meta: SessionMeta, model: ModelInfo, frame_idx: int, deadline: Deadline
    ):
        """A frame the cache lost, from the session's video file: decoded from the start (a file
        has no cheaper way to a frame), and the next REFILL_AHEAD frames embedded too, so that a
        propagation over lost frames decodes the file once per REFILL_AHEAD frames, not per frame."""
        frames = decode_frames(data, self.limits())
        entry = None
        try:
            for i in range(frame_idx + REFILL_AHEAD):
                frame = await self.run_cpu(next, frames, None)
                if frame is None:
                    break
                if i < frame_idx:
                    continue
                _, got, _ = await self.embeddings.frame_embedding(frame, model, deadline)
                if i == frame_idx:
                    entry = got
        finally:
            frames.close()
        if entry is None:
            raise NotFound(f"the session's video file has no frame {frame_idx}")
        return entry

    async def _loaded(self, session_id: str) -> LoadedSession:
        return await self._store().load(session_id)

    # ---- the calls -----------------------------------------------------------------------

    async def start(self, model_name: str | None, mode: str, video: bytes | None, deadline: Deadline) -> SessionView:
        store = self._store()
        model, _ = await self._tracking_model(model_name)
        if mode not in (WINDOW, FULL):
            raise InvalidInput(f"mode must be {WINDOW!r} or {FULL!r}, got {mode!r}")
        meta = SessionMeta(
            new_session_id(), model.model_id, model.name, mode, self.settings.video_session_ttl_s, time.time()
        )
        await store.check_capacity()  # before any work (create checks again)
        sources: dict[str, bytes] = {}
        if video:
            limits = self.limits()
            info = await self.run_cpu(probe, video, limits)
            meta.source, meta.height, meta.width = "video", info.height, info.width
            sources[VIDEO_SOURCE] = video
            self._check_bytes(len(video), 0, "the video file")
            await self._embed_video(video, limits, model, meta, deadline)
        loaded = await store.create(meta, sources)
        return view(loaded)

    async def _embed_video(
        self, video: bytes, limits: VideoLimits, model: ModelInfo, meta: SessionMeta, deadline: Deadline
    ) -> None:
        """Every frame of the file decoded and embedded, one at a time (none is kept)."""
        frames = decode_frames(video, limits)
        while True:
            frame = await self.run_cpu(next, frames, None)
            if frame is None:
                break
            if (frame.shape[0], frame.shape[1]) != (meta.height, meta.width):
                raise InvalidInput(f"frame {len(meta.frame_ids)} of the video changes size")
            frame_id, _, _ = await self.embeddings.frame_embedding(frame, model, deadline)
            meta.frame_ids.append(frame_id)
        if not meta.frame_ids:
            raise InvalidInput("the video file holds no frame")

    def _check_bytes(self, adding: int, held: int, what: str) -> None:
        limit = self.settings.video_max_session_bytes
        if held + adding > limit:
            raise Overloaded(
                f"{what} would bring the session to {held + adding} bytes, over the limit of {limit} "
                "(video_max_session_bytes): use a WINDOW session, fewer objects or frames, or a new session"
            )

    async def add_frames(self, session_id: str, frames: AsyncIterator[FrameIn], deadline: Deadline) -> SessionView:
        """Appends image frames (or frames embedded before, by frame_id) to a session of images."""
        store = self._store()
        async with store.working(session_id, "AddFrames"):
            loaded = await self._loaded(session_id)
            try:
                meta = loaded.meta
                model, _ = await self._session_model(meta)
                if meta.source == "video":
                    raise FailedPrecondition(
                        f"video session {session_id} was made from a video file: it takes no frames"
                    )
                sources: dict[str, bytes] = {}
                async for f in frames:
                    index = len(meta.frame_ids)
                    if index >= self.settings.video_max_frames:
                        raise Overloaded(
                            f"a session holds at most {self.settings.video_max_frames} frames (video_max_frames)"
                        )
                    size, frame_id = await self._added_frame(f, model, index, deadline)
                    if meta.height == 0:
                        meta.height, meta.width = size
                    elif size != (meta.height, meta.width):
                        raise InvalidInput(
                            f"frame {index} is {size[1]}x{size[0]}; the video's frames are {meta.width}x{meta.height}"
                        )
                    if f.image is not None:
                        self._check_bytes(
                            len(f.image), meta.bytes_held + sum(map(len, sources.values())), f"frame {index}"
                        )
                        sources[str(index)] = f.image
                    meta.frame_ids.append(frame_id)
                    if sum(map(len, sources.values())) >= SOURCES_FLUSH_BYTES:  # the frames so far, kept
                        await self._save_frames(loaded, sources)
                        sources = {}
                await self._save_frames(loaded, sources)
                return view(loaded)
            except BaseException:
                store.forget(session_id)
                raise

    async def _save_frames(self, loaded: LoadedSession, sources: dict[str, bytes]) -> None:
        meta = loaded.meta
        meta.source_bytes += sum(len(v) for v in sources.values())
        loaded.state.num_frames = len(meta.frame_ids)
        loaded.state.video_height, loaded.state.video_width = meta.height, meta.width
        await self._store().save(loaded, sources=sources)

    async def _added_frame(self, f: FrameIn, model: ModelInfo, index: int, deadline: Deadline):
        if (f.image is None) == (f.frame_id is None):
            raise InvalidInput(f"frame {index}: send its image or its frame_id, one of them")
        if f.image is not None:
            frame_id, entry, _ = await self.embeddings.frame_embedding(f.image, model, deadline)
        else:
            frame_id = f.frame_id
            try:
                entry = await self.embeddings.by_id(frame_id, model, deadline, video=True)
            except NotFound:
                raise NotFound(
                    f"frame {index}: frame_id {frame_id} is not cached as a video frame of {model.model_id}; send "
                    "its image instead"
                ) from None
        return entry.original_size, frame_id

    async def add_prompt(
        self,
        session_id: str,
        frame_idx: int,
        obj_id: int,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        clear_old: bool,
        deadline: Deadline,
    ) -> tuple[FrameMasks, SessionView]:
        store = self._store()
        async with store.working(session_id, "AddPrompt"):
            loaded = await self._loaded(session_id)
            try:
                model, config = await self._session_model(loaded.meta)
                state = loaded.state
                self._check_prompt(loaded, frame_idx, obj_id, points, labels, box)
                if loaded.meta.mode == WINDOW and (gap := self._window_refusal(loaded, frame_idx, obj_id, config)):
                    raise FailedPrecondition(gap)
                tracker = VideoTracker(TritonTrackingModels(self.embeddings.triton, model, deadline), config)
                features = self._features(loaded, model, config, deadline)
                try:
                    masks = await tracker.add_points(
                        state, frame_idx, obj_id, features, points, labels, box, clear_old_points=clear_old
                    )
                except ValueError as exc:
                    raise InvalidInput(str(exc)) from None
                await store.save(loaded)
                return masks, view(loaded)
            except BaseException:
                store.forget(session_id)
                raise

    @staticmethod
    def _window_refusal(loaded: LoadedSession, frame_idx: int, obj_id: int, config: TrackerConfig) -> str | None:
        """Why a WINDOW session cannot correct obj_id on frame_idx exactly, or None."""
        state = loaded.state
        if (gap := correction_gap(state, frame_idx, obj_id)) is not None:
            return gap
        obj = state.object(obj_id)
        if obj is None or frame_idx not in obj.tracked or frame_idx in obj.cond:
            return None  # an initial conditioning frame reads no memory
        return window_gap(state, frame_idx, obj.tracked[frame_idx], config.memory)

    def _check_prompt(self, loaded: LoadedSession, frame_idx: int, obj_id: int, points, labels, box) -> None:
        meta, state = loaded.meta, loaded.state
        if not meta.frame_ids:
            raise FailedPrecondition(f"video session {meta.session_id} has no frame yet: add frames first")
        if not 0 <= frame_idx < len(meta.frame_ids):
            raise InvalidInput(f"frame_index {frame_idx} is outside the video (frames 0 to {len(meta.frame_ids) - 1})")
        if state.object(obj_id) is None and len(state.objects) >= self.settings.video_max_objects:
            raise Overloaded(f"a session tracks at most {self.settings.video_max_objects} objects (video_max_objects)")
        n = 0 if points is None else len(points)
        if n > self.settings.max_points_per_prompt:
            raise Overloaded(f"{n} points, over max_points_per_prompt {self.settings.max_points_per_prompt}")
        if points is None and box is None:
            raise InvalidInput("a prompt needs points (with labels) or a box")
        for what, arr in (("points", points), ("box", box)):
            if arr is None:
                continue
            a = np.asarray(arr, np.float64).reshape(-1, 2)
            if not np.isfinite(a).all():
                raise InvalidInput(f"{what}: coordinates must be finite")
            if (a < 0).any() or (a[:, 0] > meta.width).any() or (a[:, 1] > meta.height).any():
                raise InvalidInput(f"{what}: coordinates must be inside the video ({meta.width}x{meta.height})")
        if labels is not None and not np.isin(np.asarray(labels), (0, 1)).all():
            raise InvalidInput("labels must be 1 (foreground) or 0 (background)")

    async def propagate(
        self,
        session_id: str,
        start: int | None,
        direction: str,
        max_frames: int | None,
        deadline: Deadline,
    ) -> AsyncIterator[FrameMasks]:
        """Each tracked frame's masks as it is tracked and written; stops within one frame of
        a CancelPropagation or of the caller leaving."""
        store = self._store()
        async with store.working(session_id, "Propagate"):
            loaded = await self._loaded(session_id)
            try:
                async for masks in self._propagate(loaded, start, direction, max_frames, deadline):
                    yield masks
            except BaseException:
                store.forget(session_id)
                raise

    async def _propagate(self, loaded: LoadedSession, start, direction, max_frames, deadline):
        store = self._store()
        meta, state = loaded.meta, loaded.state
        model, config = await self._session_model(meta)
        if direction not in (FORWARD, BACKWARD, BOTH):
            raise InvalidInput(f"direction must be one of {FORWARD}, {BACKWARD}, {BOTH}")
        if not state.objects:
            raise FailedPrecondition("no object has a prompt yet: add points or a box first (AddPrompt)")
        if start is not None and not 0 <= start < state.num_frames:
            raise InvalidInput(f"start_frame {start} is outside the video (frames 0 to {state.num_frames - 1})")
        if max_frames is not None and max_frames < 0:
            raise InvalidInput("max_frames must not be negative")
        await store.clear_cancel(meta.session_id)
        tracker = VideoTracker(TritonTrackingModels(self.embeddings.triton, model, deadline), config)
        features = self._features(loaded, model, config, deadline)
        try:
            await tracker.preflight(state, features)
        except ValueError as exc:
            raise FailedPrecondition(str(exc)) from None
        await store.save(loaded)
        for reverse in {FORWARD: (False,), BACKWARD: (True,), BOTH: (False, True)}[direction]:
            order = tracker.processing_order(state, start, max_frames, reverse)
            if len(order) == 0:
                continue
            if meta.mode == WINDOW and (gap := window_gap(state, order[0], reverse, config.memory)) is not None:
                raise FailedPrecondition(gap)
            self._check_growth(loaded, len(order))
            for frame_idx in order:
                if await store.take_cancel(meta.session_id):
                    raise Cancelled(f"propagation of video session {meta.session_id} cancelled (CancelPropagation)")
                masks = await tracker.track_frame(state, frame_idx, features, reverse)
                if meta.mode == WINDOW:
                    prune(state, frame_idx, reverse, config.memory)
                await store.save(loaded)
                yield masks

    def _check_growth(self, loaded: LoadedSession, frames: int) -> None:
        """A FULL session's bytes after tracking `frames` more frames, refused up front past its limit."""
        if loaded.meta.mode != FULL or not loaded.state.objects:
            return
        sizes = [o.nbytes for obj in loaded.state.objects for o in obj.cond.values() if not o.pointer_only]
        per_output = max(sizes, default=0) + 64  # an output's value: its logits, pointer and memory
        self._check_bytes(frames * len(loaded.state.objects) * per_output, loaded.meta.bytes_held, "this propagation")

    async def cancel(self, session_id: str) -> SessionView:
        store = self._store()
        loaded = await self._loaded(session_id)
        await store.cancel(session_id)
        return view(loaded)

    async def remove_object(
        self, session_id: str, obj_id: int, deadline: Deadline
    ) -> tuple[list[FrameMasks], SessionView]:
        store = self._store()
        async with store.working(session_id, "RemoveObject"):
            loaded = await self._loaded(session_id)
            try:
                _, config = await self._session_model(loaded.meta)
                if loaded.state.object(obj_id) is None:
                    raise NotFound(
                        f"object {obj_id} is not in video session {session_id} (objects: {loaded.state.obj_ids})"
                    )
                tracker = VideoTracker(None, config)  # type: ignore[arg-type]  # no model runs here
                updated = tracker.remove_object(loaded.state, obj_id)
                await store.save(loaded)
                return updated, view(loaded)
            except BaseException:
                store.forget(session_id)
                raise

    async def clear_prompts(
        self, session_id: str, frame_idx: int | None, obj_id: int | None, deadline: Deadline
    ) -> tuple[list[FrameMasks], SessionView]:
        """clear_all_prompts_in_frame for one object and frame, or every frame of an object, or
        every object on a frame: the frames' masks after."""
        store = self._store()
        async with store.working(session_id, "ClearPrompts"):
            loaded = await self._loaded(session_id)
            try:
                _, config = await self._session_model(loaded.meta)
                state = loaded.state
                if obj_id is not None and state.object(obj_id) is None:
                    raise NotFound(f"object {obj_id} is not in video session {session_id} (objects: {state.obj_ids})")
                if frame_idx is not None and not 0 <= frame_idx < state.num_frames:
                    raise InvalidInput(f"frame_index {frame_idx} is outside the video")
                tracker = VideoTracker(None, config)  # type: ignore[arg-type]
                objs = [obj_id] if obj_id is not None else state.obj_ids
                out: dict[int, FrameMasks] = {}
                for o in objs:
                    frames = [frame_idx] if frame_idx is not None else sorted(state.object(o).point_inputs)
                    for f in frames:
                        out[f] = tracker.clear_prompts(state, f, o)
                await store.save(loaded)
                return [out[f] for f in sorted(out)], view(loaded)
            except BaseException:
                store.forget(session_id)
                raise

    async def reset(self, session_id: str) -> SessionView:
        store = self._store()
        async with store.working(session_id, "ResetSession"):
            loaded = await self._loaded(session_id)
            try:
                VideoTracker.reset(loaded.state)
                await store.save(loaded)
                return view(loaded)
            except BaseException:
                store.forget(session_id)
                raise

    async def get(self, session_id: str) -> SessionView:
        return view(await self._loaded(session_id))

    async def close(self, session_id: str) -> bool:
        """Whether the session existed. Not while a call works on it (a propagation would write
        the session back): Busy, cancel it first."""
        store = self._store()
        async with store.working(session_id, "CloseSession"):
            return await store.delete(session_id)

    def non_overlap(self, model_id: str) -> bool:
        """Whether the model's masks are answered without overlaps (its non_overlap_masks)."""
        config = self._configs.get(model_id)
        return bool(config is not None and config.non_overlap_masks)
