"""SAM 2 video tracking: SAM2VideoPredictor's session flow (sam2==1.1.0: add_new_points_or_box,
propagate_in_video with its preflight, clear_all_prompts_in_frame, remove_object, reset_state)
over models it awaits (the gateway's are Triton's; the tests' may be PyTorch or ONNX Runtime) and
state that is plain arrays and dicts, so that it can be kept anywhere (a Redis, between
requests) and continued by any process.

The reference's semantics, kept on purpose:
- A frame an object was never tracked on is an initial conditioning frame: its clicks segment
  it as on an image (the frame's features plus no_mem_embed, no memory). On a frame already
  tracked, clicks correct the tracked mask (the previous logits, clamped to +-32, go in as the
  mask input) and, unless the model adds every corrected frame as conditioning
  (add_all_frames_to_correct_as_cond), the correction is a non-conditioning output: propagating
  again from that frame reproduces the first run there; only later frames use it.
- Memories are encoded when a propagation starts (the preflight), from the masks the user saw,
  binarised when the model says so; frames tracked during a propagation encode theirs as they go.
- An object judged absent on a frame gets NO_OBJ_SCORE logits and the no-object pointer.

Where this differs from the reference, it is where the reference fails:
- Tracking an object on a frame before its first prompt (no object pointer in the past) makes the
  reference attend to bfloat16 memories with float32 weights and raise; here the memories are
  widened to float32 first, as the reference does on every other frame.
- A one-frame video's pointer distance is divided by zero in the reference (NaN); here it is 0.
- fill_hole_area runs on the CPU (fill_holes, OpenCV), as the reference runs it on a GPU only.
Objects are batched: the reference runs one object at a time; here the objects of a frame whose
memory plans have one shape are conditioned, decoded and encoded in one call each.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

import numpy as np

from samserve.core.postprocess import STABILITY_DELTA, STABILITY_THRESH
from samserve.core.tracking_heads import NO_OBJ_SCORE, TrackingFlags, tracking_heads
from samserve.core.video_memory import (
    FrameOutput,
    MemoryFlags,
    MemoryPlan,
    conditioning_inputs,
    plan_memory,
    to_bf16,
)

CLAMP_PREVIOUS_LOGITS = 32.0  # add_new_points_or_box clamps the previous logits to +-32
HOLE_SCORE = 0.1  # fill_holes_in_mask_scores: a filled hole's logit


def fill_holes(logits: np.ndarray, max_area: int) -> np.ndarray:
    """sam2.utils.misc.fill_holes_in_mask_scores on one (L, L) mask, on the CPU: every
    8-connected region of logits <= 0 of at most max_area pixels (a hole, or a small background
    region at the border: the reference does not tell them apart) gets the logit 0.1. The
    reference runs this only where its CUDA extension loads (it skips it on the CPU)."""
    import cv2

    background = (logits <= 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
    small = np.zeros(n, dtype=bool)
    small[1:] = stats[1:, cv2.CC_STAT_AREA] <= max_area
    if not small.any():
        return logits
    return np.where(small[labels], np.float32(HOLE_SCORE), logits).astype(np.float32)


@dataclass(frozen=True)
class FrameFeatures:
    """A frame's encoder outputs: the raw top-level features (no no_mem_embed) and the decoder's
    high-resolution features."""

    vision: np.ndarray  # (C, e, e) float32
    feat_s0: np.ndarray  # (32, 4e, 4e)
    feat_s1: np.ndarray  # (64, 2e, 2e)


class TrackingModels(Protocol):
    async def condition(
        self,
        vision: np.ndarray,
        memory: np.ndarray,
        memory_tpos: np.ndarray,
        pointers: np.ndarray,
        positions: np.ndarray,
    ) -> np.ndarray:
        """Sam2MemoryConditioning: (B, C, e, e) features conditioned on the memories."""
        ...

    async def decode(
        self,
        features: np.ndarray,
        feat_s0: np.ndarray,
        feat_s1: np.ndarray,
        coords: np.ndarray,
        labels: np.ndarray,
        mask_input: np.ndarray,
        has_mask_input: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sam2TrackingDecoderOnnx: (masks (B, 4, L, L), iou (B, 4), object scores (B, 1), pointers (B, 4, C))."""
        ...

    async def encode_memory(
        self, vision: np.ndarray, pred_masks: np.ndarray, object_score_logits: np.ndarray, from_points: bool
    ) -> np.ndarray:
        """ExportableMemoryEncoder: (B, Cm, e, e) float32 memory features."""
        ...


Features = Callable[[int], Awaitable[FrameFeatures]]


@dataclass(frozen=True)
class TrackerConfig:
    """The built video predictor's choices, never assumed: build_engines.export_sam2_tracking.
    tracker_config reads them from the model into JSON (the model's TRACKER_CONFIG parameter),
    from_json brings them here."""

    image_size: int
    multimask_output_in_sam: bool
    multimask_output_for_tracking: bool
    multimask_min_pt_num: int
    multimask_max_pt_num: int
    add_all_frames_to_correct_as_cond: bool
    non_overlap_masks: bool
    fill_hole_area: int  # the video predictor's (build_sam2_video_predictor sets 8); 0: off
    no_mem_embed: np.ndarray  # (C,) float32
    memory: MemoryFlags
    heads: TrackingFlags

    @classmethod
    def from_json(cls, text: str) -> TrackerConfig:
        """ValueError for anything but what tracker_config writes."""
        try:
            d = json.loads(text)
            stability = (float(d["heads"]["stability_delta"]), float(d["heads"]["stability_thresh"]))
            if d["heads"]["dynamic_multimask_via_stability"] and stability != (STABILITY_DELTA, STABILITY_THRESH):
                raise ValueError(f"the model's stability fallback {stability} is not the served decoder's")
            no_obj = d["heads"]["no_obj_ptr"]
            heads = TrackingFlags(
                **{k: bool(d["heads"][k]) for k in _HEAD_FLAGS},
                no_obj_ptr=None if no_obj is None else np.asarray(no_obj, np.float32),
            )
            memory = MemoryFlags(**{f.name: f.type_of(d["memory"][f.name]) for f in _MEMORY_FIELDS})
            return cls(
                image_size=int(d["image_size"]),
                **{k: bool(d[k]) for k in _CONFIG_FLAGS},
                multimask_min_pt_num=int(d["multimask_min_pt_num"]),
                multimask_max_pt_num=int(d["multimask_max_pt_num"]),
                fill_hole_area=int(d["fill_hole_area"]),
                no_mem_embed=np.asarray(d["no_mem_embed"], np.float32).reshape(-1),
                memory=memory,
                heads=heads,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a tracker config: {exc!r}") from None

    def multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """SAM2Base._use_multimask."""
        return (
            self.multimask_output_in_sam
            and (is_init_cond_frame or self.multimask_output_for_tracking)
            and self.multimask_min_pt_num <= num_points <= self.multimask_max_pt_num
        )


@dataclass
class ObjectState:
    """One object's inputs and outputs, as the reference keeps them per object index."""

    obj_id: int
    point_inputs: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # coords (N, 2), labels (N,)
    cond: dict[int, FrameOutput] = field(default_factory=dict)
    non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_cond: dict[int, FrameOutput] = field(default_factory=dict)
    temp_non_cond: dict[int, FrameOutput] = field(default_factory=dict)
    tracked: dict[int, bool] = field(default_factory=dict)  # frame -> tracked in reverse

    def output_on(self, frame: int, is_cond: bool) -> FrameOutput | None:
        """The latest output on a frame: the temporary one (of this storage), else the kept ones."""
        temp = self.temp_cond if is_cond else self.temp_non_cond
        out = temp.get(frame)
        if out is None:
            out = self.cond.get(frame)
        if out is None:
            out = self.non_cond.get(frame)
        return out


@dataclass
class TrackingState:
    num_frames: int
    video_height: int
    video_width: int
    objects: list[ObjectState] = field(default_factory=list)  # in the order objects were added

    @property
    def obj_ids(self) -> list[int]:
        return [o.obj_id for o in self.objects]

    def object(self, obj_id: int) -> ObjectState | None:
        return next((o for o in self.objects if o.obj_id == obj_id), None)


@dataclass(frozen=True)
class FrameMasks:
    """Every object's low-resolution logits on one frame, in the state's object order (an object
    with no output there: NO_OBJ_SCORE everywhere), and its object score (None: no output)."""

    frame_idx: int
    obj_ids: list[int]
    logits: np.ndarray  # (n_objects, L, L) float32
    object_scores: list[float | None]


_HEAD_FLAGS = (
    "pred_obj_scores",
    "soft_no_obj_ptr",
    "fixed_no_obj_ptr",
    "use_multimask_token_for_obj_ptr",
    "dynamic_multimask_via_stability",
)
_CONFIG_FLAGS = (
    "multimask_output_in_sam",
    "multimask_output_for_tracking",
    "add_all_frames_to_correct_as_cond",
    "non_overlap_masks",
)


@dataclass(frozen=True)
class _Field:
    name: str
    type_of: type


_MEMORY_FIELDS = tuple(_Field(f.name, bool if f.type == "bool" else int) for f in fields(MemoryFlags))


class VideoTracker:
    def __init__(self, models: TrackingModels, config: TrackerConfig) -> None:
        self.models, self.config = models, config
        self.low_res = config.image_size // 4

    # ---- prompts -------------------------------------------------------------------------

    def _prompt_points(
        self,
        state: TrackingState,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """add_new_points_or_box's coordinates: the box's corners (labels 2, 3) first, then the
        points, from the video's pixels to the model's input scale, in float32 as torch does."""
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32).reshape(-1, 2)
        lab = np.zeros((0,), np.int32) if labels is None else np.asarray(labels, np.int32).reshape(-1)
        if len(pts) != len(lab):
            raise ValueError(f"{len(pts)} points but {len(lab)} labels")
        if box is not None:
            pts = np.concatenate([np.asarray(box, np.float32).reshape(2, 2), pts])
            lab = np.concatenate([np.array([2, 3], np.int32), lab])
        size = np.array([state.video_width, state.video_height], np.float32)
        return (pts / size) * np.float32(self.config.image_size), lab

    async def add_points(
        self,
        state: TrackingState,
        frame_idx: int,
        obj_id: int,
        features: Features,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        clear_old_points: bool = True,
    ) -> FrameMasks:
        """add_new_points_or_box: the object's new mask on the frame, and every other object's."""
        if points is None and box is None:
            raise ValueError("at least one of points or box must be given")
        if box is not None and not clear_old_points:
            raise ValueError("a box must come before any point: add it with clear_old_points")
        self._check_frame(state, frame_idx)
        coords, labs = self._prompt_points(state, points, labels, box)
        obj = state.object(obj_id)
        if obj is None:
            obj = ObjectState(obj_id)
            state.objects.append(obj)
        if not clear_old_points and frame_idx in obj.point_inputs:
            old_c, old_l = obj.point_inputs[frame_idx]
            coords, labs = np.concatenate([old_c, coords]), np.concatenate([old_l, labs])
        obj.point_inputs[frame_idx] = (coords, labs)
        is_init = frame_idx not in obj.tracked
        reverse = False if is_init else obj.tracked[frame_idx]
        is_cond = is_init or self.config.add_all_frames_to_correct_as_cond
        prev = obj.output_on(frame_idx, is_cond)
        prev_logits = None
        if prev is not None:
            if prev.pred_masks is None:
                raise ValueError(
                    f"object {obj_id}'s mask on frame {frame_idx} is no longer kept: it cannot be corrected"
                )
            prev_logits = np.clip(prev.pred_masks, -CLAMP_PREVIOUS_LOGITS, CLAMP_PREVIOUS_LOGITS)
        (out,) = await self._step(
            state, [obj], frame_idx, features, is_init, reverse, (coords, labs), [prev_logits], run_memory_encoder=False
        )
        (obj.temp_cond if is_cond else obj.temp_non_cond)[frame_idx] = out
        return self.consolidated(state, frame_idx, is_cond)

    def consolidated(self, state: TrackingState, frame_idx: int, is_cond: bool) -> FrameMasks:
        """_consolidate_temp_output_across_obj: each object's latest logits on the frame."""
        n, size = len(state.objects), self.low_res
        logits = np.full((n, size, size), np.float32(NO_OBJ_SCORE), np.float32)
        scores: list[float | None] = []
        for i, obj in enumerate(state.objects):
            out = obj.output_on(frame_idx, is_cond)
            if out is not None and out.pred_masks is None:
                out = None  # a WINDOW session no longer keeps this frame's logits: no output shown
            scores.append(None if out is None else out.object_score_logits)
            if out is not None:
                logits[i] = out.pred_masks
        return FrameMasks(frame_idx, state.obj_ids, logits, scores)

    def clear_prompts(self, state: TrackingState, frame_idx: int, obj_id: int) -> FrameMasks:
        """clear_all_prompts_in_frame: the frame's prompted output, if any, kept as tracked."""
        obj = self._known(state, obj_id)
        self._clear(obj, frame_idx)
        is_cond = any(frame_idx in o.temp_cond for o in state.objects)
        return self.consolidated(state, frame_idx, is_cond)

    @staticmethod
    def _clear(obj: ObjectState, frame_idx: int) -> None:
        obj.point_inputs.pop(frame_idx, None)
        obj.temp_cond.pop(frame_idx, None)
        obj.temp_non_cond.pop(frame_idx, None)
        out = obj.cond.pop(frame_idx, None)
        if out is not None:
            obj.non_cond[frame_idx] = out
            obj.tracked.pop(frame_idx, None)

    def remove_object(self, state: TrackingState, obj_id: int) -> list[FrameMasks]:
        """remove_object: the frames the object was prompted on, as they are without it."""
        obj = self._known(state, obj_id)
        if len(state.objects) == 1:
            self.reset(state)
            return []
        frames = list(obj.point_inputs)
        for f in frames:
            self._clear(obj, f)
        state.objects.remove(obj)
        return [self.consolidated(state, f, any(f in o.temp_cond for o in state.objects)) for f in frames]

    @staticmethod
    def reset(state: TrackingState) -> None:
        """reset_state: every object and prompt gone."""
        state.objects.clear()

    # ---- propagation ---------------------------------------------------------------------

    async def preflight(self, state: TrackingState, features: Features) -> None:
        """propagate_in_video_preflight: the prompted frames' memories encoded (from the masks
        the user saw, as click-made masks), their outputs kept, the temporary ones cleared."""
        if not state.objects:
            raise ValueError("no object has a prompt yet: add points or a box first")
        pending: dict[int, list[FrameOutput]] = {}
        for obj in state.objects:
            for temp in (obj.temp_non_cond, obj.temp_cond):
                for frame_idx, out in temp.items():
                    if out.maskmem_features is None:
                        pending.setdefault(frame_idx, []).append(out)
        for frame_idx, outs in pending.items():
            feats = await features(frame_idx)
            memory = await self.models.encode_memory(
                np.repeat(feats.vision[None], len(outs), axis=0),
                np.stack([o.pred_masks[None] for o in outs]),
                np.array([[o.object_score_logits] for o in outs], np.float32),
                True,
            )
            for o, m in zip(outs, memory, strict=True):
                o.maskmem_features = to_bf16(m)
        for obj in state.objects:
            for temp, kept in ((obj.temp_non_cond, obj.non_cond), (obj.temp_cond, obj.cond)):
                for frame_idx, out in temp.items():
                    kept[frame_idx] = out
                temp.clear()
            if not obj.cond:
                raise ValueError(f"object {obj.obj_id} has no prompt yet: add points or a box for it first")
            for frame_idx in obj.cond:
                obj.non_cond.pop(frame_idx, None)

    def processing_order(
        self, state: TrackingState, start_frame_idx: int | None, max_frames: int | None, reverse: bool
    ) -> range:
        """propagate_in_video's frames: from the start (by default the first prompted frame)."""
        if start_frame_idx is None:
            start_frame_idx = min(t for o in state.objects for t in o.cond)
        self._check_frame(state, start_frame_idx)
        if max_frames is None:
            max_frames = state.num_frames
        if reverse:
            end = max(start_frame_idx - max_frames, 0)
            return range(start_frame_idx, end - 1, -1) if start_frame_idx > 0 else range(0)
        end = min(start_frame_idx + max_frames, state.num_frames - 1)
        return range(start_frame_idx, end + 1)

    async def propagate(
        self,
        state: TrackingState,
        features: Features,
        start_frame_idx: int | None = None,
        max_frames: int | None = None,
        reverse: bool = False,
    ) -> AsyncIterator[FrameMasks]:
        """propagate_in_video: each frame's masks as it is tracked. The state is updated frame by
        frame: a caller that stops early keeps what was tracked."""
        await self.preflight(state, features)
        for frame_idx in self.processing_order(state, start_frame_idx, max_frames, reverse):
            yield await self.track_frame(state, frame_idx, features, reverse)

    async def track_frame(self, state: TrackingState, frame_idx: int, features: Features, reverse: bool) -> FrameMasks:
        """One frame of propagate_in_video (after the preflight), every object at once."""
        n, size = len(state.objects), self.low_res
        logits = np.empty((n, size, size), np.float32)
        scores: list[float | None] = [None] * n
        to_track = [i for i, o in enumerate(state.objects) if frame_idx not in o.cond]
        for i, obj in enumerate(state.objects):
            if i not in to_track:
                out = obj.cond[frame_idx]
                logits[i], scores[i] = out.pred_masks, out.object_score_logits
        if to_track:
            objs = [state.objects[i] for i in to_track]
            no_points = (np.zeros((0, 2), np.float32), np.zeros((0,), np.int32))
            outs = await self._step(
                state, objs, frame_idx, features, False, reverse, no_points, [None] * len(objs), run_memory_encoder=True
            )
            for i, obj, out in zip(to_track, objs, outs, strict=True):
                obj.non_cond[frame_idx] = out
                logits[i], scores[i] = out.pred_masks, out.object_score_logits
        for obj in state.objects:
            obj.tracked[frame_idx] = reverse
        return FrameMasks(frame_idx, state.obj_ids, logits, scores)

    # ---- one frame, some objects ---------------------------------------------------------

    async def _step(
        self,
        state: TrackingState,
        objs: Sequence[ObjectState],
        frame_idx: int,
        features: Features,
        is_init_cond_frame: bool,
        reverse: bool,
        points: tuple[np.ndarray, np.ndarray],
        mask_logits: Sequence[np.ndarray | None],
        run_memory_encoder: bool,
    ) -> list[FrameOutput]:
        """SAM2Base.track_step for objects with the same prompt points (none, when tracking)."""
        feats = await features(frame_idx)
        b = len(objs)
        vision = np.repeat(feats.vision[None], b, axis=0)
        if is_init_cond_frame:
            pix = vision + self.config.no_mem_embed[None, :, None, None]
        else:
            pix = await self._conditioned(state, objs, frame_idx, vision, reverse)
        coords, labels = points
        # the prompt encoder pads points without a box with a (0, 0) point labelled -1 (and
        # without points, the tracker sends one such point: two "not a point" tokens)
        if len(labels) == 0:
            coords, labels = np.zeros((1, 2), np.float32), np.array([-1], np.int32)
        pad_c = np.concatenate([coords, np.zeros((1, 2), np.float32)])
        pad_l = np.concatenate([labels, [-1]]).astype(np.float32)
        has = np.array([m is not None for m in mask_logits], np.float32)
        size = self.low_res
        masks_in = np.stack([np.zeros((1, size, size), np.float32) if m is None else m[None] for m in mask_logits])
        masks, iou, scores, pointers = await self.models.decode(
            pix,
            np.repeat(feats.feat_s0[None], b, axis=0),
            np.repeat(feats.feat_s1[None], b, axis=0),
            np.repeat(pad_c[None], b, axis=0),
            np.repeat(pad_l[None], b, axis=0),
            masks_in,
            has,
        )
        num_points = 0 if points[1] is None else len(points[1])
        heads = tracking_heads(
            masks, iou, scores, pointers, self.config.multimask(is_init_cond_frame, num_points), self.config.heads
        )
        memory = None
        if run_memory_encoder:
            memory = await self.models.encode_memory(
                vision, heads.low_res_masks, heads.object_score_logits, num_points > 0
            )
        low = [np.ascontiguousarray(heads.low_res_masks[i, 0], np.float32) for i in range(b)]
        if self.config.fill_hole_area > 0:  # after the memory encoder, as _run_single_frame_inference
            low = [fill_holes(m, self.config.fill_hole_area) for m in low]
        return [
            FrameOutput(
                pred_masks=low[i],
                obj_ptr=np.ascontiguousarray(heads.object_pointer[i], np.float32),
                object_score_logits=float(heads.object_score_logits[i, 0]),
                maskmem_features=None if memory is None else to_bf16(memory[i]),
            )
            for i in range(b)
        ]

    async def _conditioned(
        self, state: TrackingState, objs: Sequence[ObjectState], frame_idx: int, vision: np.ndarray, reverse: bool
    ) -> np.ndarray:
        """The frame's features conditioned on each object's memories, objects whose plans have
        one shape in one call."""
        plans: list[MemoryPlan[FrameOutput]] = [
            plan_memory(frame_idx, o.cond, o.non_cond, state.num_frames, reverse, self.config.memory) for o in objs
        ]
        out = np.empty_like(vision)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(plans):
            groups.setdefault(p.shape, []).append(i)
        for rows in groups.values():
            memory, tpos, pointers, positions = conditioning_inputs([plans[i] for i in rows])
            out[rows] = await self.models.condition(vision[rows], memory, tpos, pointers, positions)
        return out

    # ---- checks --------------------------------------------------------------------------

    @staticmethod
    def _check_frame(state: TrackingState, frame_idx: int) -> None:
        if not 0 <= frame_idx < state.num_frames:
            raise ValueError(f"frame {frame_idx} is outside the video (frames 0 to {state.num_frames - 1})")

    @staticmethod
    def _known(state: TrackingState, obj_id: int) -> ObjectState:
        obj = state.object(obj_id)
        if obj is None:
            raise KeyError(f"object {obj_id} is not in the session (objects: {state.obj_ids})")
        return obj
