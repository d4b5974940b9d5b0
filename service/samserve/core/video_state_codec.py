"""A tracking session's state as bytes (what the state Redis keeps), and back.

The state is two kinds of values: one skeleton (JSON: the video's size and frame count, each
object's prompts, which frame outputs it keeps where, which frames it tracked and in which
direction) and one value per frame output (binary: low-res logits, object pointer and score,
memory features as bfloat16 bits), named in the skeleton by an id unique in the session, so
that a tracked frame adds one output value and rewrites the skeleton, never the rest.

Nothing here is trusted on the way back: any value that does not check out (magic, sizes,
checksum, types) raises CorruptState; a session with one is lost, never half-read.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping

import numpy as np

from samserve.core.video_memory import FrameOutput
from samserve.core.video_tracking import ObjectState, TrackingState

OUTPUT_MAGIC = b"SSVFO\x01"
_LEN = struct.Struct("<I")
KINDS = ("cond", "non_cond", "temp_cond", "temp_non_cond")


class CorruptState(ValueError):
    pass


def encode_output(out: FrameOutput) -> bytes:
    parts = [np.ascontiguousarray(out.obj_ptr, np.float32)]
    if out.pred_masks is not None:
        parts.append(np.ascontiguousarray(out.pred_masks, np.float32))
    if out.maskmem_features is not None:
        parts.append(np.ascontiguousarray(out.maskmem_features, np.uint16))
    payload = b"".join(p.tobytes() for p in parts)
    header = {
        "ptr": len(out.obj_ptr),
        "masks": None if out.pred_masks is None else list(out.pred_masks.shape),
        "memory": None if out.maskmem_features is None else list(out.maskmem_features.shape),
        "score": float(out.object_score_logits),
        "crc32": zlib.crc32(payload),
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return OUTPUT_MAGIC + _LEN.pack(len(head)) + head + payload


def _shape(value, dims: int) -> tuple[int, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) != dims
        or not all(isinstance(d, int) and 0 < d <= 4096 for d in value)
    ):
        raise CorruptState(f"bad shape {value!r}")
    return tuple(value)


def decode_output(value: bytes) -> FrameOutput:
    try:
        if not value.startswith(OUTPUT_MAGIC):
            raise CorruptState("bad magic")
        (n,) = _LEN.unpack_from(value, len(OUTPUT_MAGIC))
        start = len(OUTPUT_MAGIC) + _LEN.size
        header = json.loads(value[start : start + n])
        payload = memoryview(value)[start + n :]
        ptr = int(header["ptr"])
        masks, memory = _shape(header["masks"], 2), _shape(header["memory"], 3)
        sizes = [
            4 * ptr,
            0 if masks is None else 4 * masks[0] * masks[1],
            0 if memory is None else 2 * int(np.prod(memory)),
        ]
        if not 0 < ptr <= 4096 or len(payload) != sum(sizes):
            raise CorruptState("payload length does not match the header")
        if zlib.crc32(payload) != header["crc32"]:
            raise CorruptState("checksum mismatch")
        at = 0
        obj_ptr = np.frombuffer(payload, np.float32, ptr, at).copy()
        at += sizes[0]
        pred = None if masks is None else np.frombuffer(payload, np.float32, sizes[1] // 4, at).reshape(masks).copy()
        at += sizes[1]
        mem = None if memory is None else np.frombuffer(payload, np.uint16, sizes[2] // 2, at).reshape(memory).copy()
        return FrameOutput(pred, obj_ptr, float(header["score"]), mem)
    except CorruptState:
        raise
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise CorruptState(f"unreadable frame output: {exc}") from None


def skeleton(state: TrackingState, uid_of: Mapping[int, int]) -> dict:
    """The state without its outputs, each output named by uid_of[id(output)]."""
    objects = []
    for o in state.objects:
        objects.append(
            {
                "obj_id": o.obj_id,
                "points": {str(f): [c.tolist(), lab.tolist()] for f, (c, lab) in o.point_inputs.items()},
                **{k: [[f, uid_of[id(out)]] for f, out in getattr(o, k).items()] for k in KINDS},
                "tracked": [[f, r] for f, r in o.tracked.items()],
            }
        )
    return {
        "num_frames": state.num_frames,
        "height": state.video_height,
        "width": state.video_width,
        "objects": objects,
    }


def referenced(sk: dict) -> set[int]:
    """The output ids a skeleton names."""
    return {uid for o in sk["objects"] for k in KINDS for _, uid in o[k]}


def restore(sk: dict, outputs: Mapping[int, FrameOutput]) -> TrackingState:
    """The state from its skeleton and its outputs by id (KeyError: one is missing)."""
    try:
        state = TrackingState(int(sk["num_frames"]), int(sk["height"]), int(sk["width"]))
        for o in sk["objects"]:
            obj = ObjectState(int(o["obj_id"]))
            for f, (coords, labels) in o["points"].items():
                c = np.asarray(coords, np.float32).reshape(-1, 2)
                lab = np.asarray(labels, np.int32).reshape(-1)
                if len(c) != len(lab):
                    raise CorruptState("points and labels differ in count")
                obj.point_inputs[int(f)] = (c, lab)
            for k in KINDS:
                getattr(obj, k).update((int(f), outputs[int(uid)]) for f, uid in o[k])
            obj.tracked.update((int(f), bool(r)) for f, r in o["tracked"])
            state.objects.append(obj)
        return state
    except CorruptState:
        raise
    except KeyError as exc:
        raise CorruptState(f"the state names an output it does not hold: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise CorruptState(f"unreadable state: {exc}") from None
