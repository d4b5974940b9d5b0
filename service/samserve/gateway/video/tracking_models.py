"""core.video_tracking.TrackingModels over Triton's tracker models (contract.TRACKER_MODELS), for
one model and one request's deadline."""

from __future__ import annotations

import numpy as np

from samserve.contract import SAM2_CONDITIONING, SAM2_MEMORY_ENCODER, SAM2_TRACKING_DECODER, TRACKER_IO, ModelInfo
from samserve.gateway.backends.triton import TritonBackend
from samserve.gateway.deadline import Deadline


class TritonTrackingModels:
    def __init__(self, triton: TritonBackend, model: ModelInfo, deadline: Deadline) -> None:
        self.triton, self.model, self.deadline = triton, model, deadline
        self.calls = 0

    async def _run(self, role: str, *arrays: np.ndarray) -> list[np.ndarray]:
        names = TRACKER_IO[role][0]
        self.calls += 1
        feed = {n: np.ascontiguousarray(a) for n, a in zip(names, arrays, strict=True)}
        deadline_s = self.deadline.remaining(f"running {role}")
        return await self.triton.track(self.model, role, feed, deadline_s, self._output_bytes(role, arrays[0]))

    @staticmethod
    def _output_bytes(role: str, first: np.ndarray) -> dict[str, int]:
        """The large outputs' sizes for this object count (float32), so that they come back
        through shared memory regions of the right size whatever the count was last time."""
        b, e = first.shape[0], first.shape[-1]
        if role == SAM2_CONDITIONING:
            return {"conditioned": b * 256 * e * e * 4}
        if role == SAM2_TRACKING_DECODER:
            return {"low_res_masks": b * 4 * (4 * e) ** 2 * 4, "object_pointers": b * 4 * 256 * 4}
        return {"maskmem_features": b * 64 * e * e * 4}

    async def condition(self, vision, memory, memory_tpos, pointers, positions) -> np.ndarray:
        f32 = np.float32
        args = (vision.astype(f32), memory.astype(f32), memory_tpos.astype(np.int64), pointers.astype(f32))
        return (await self._run(SAM2_CONDITIONING, *args, positions.astype(f32)))[0]

    async def decode(self, features, feat_s0, feat_s1, coords, labels, mask_input, has_mask_input):
        arrays = (features, feat_s0, feat_s1, coords, labels, mask_input, has_mask_input)
        masks, iou, scores, pointers = await self._run(SAM2_TRACKING_DECODER, *(a.astype(np.float32) for a in arrays))
        return masks, iou, scores, pointers

    async def encode_memory(self, vision, pred_masks, object_score_logits, from_points: bool) -> np.ndarray:
        flag = np.array([float(from_points)], np.float32)
        args = (vision.astype(np.float32), pred_masks.astype(np.float32), object_score_logits.astype(np.float32))
        return (await self._run(SAM2_MEMORY_ENCODER, *args, flag))[0]
