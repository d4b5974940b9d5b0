"""The tracker's choice of memories (core.video_memory) and the conditioning model
(build_engines.sam2_memory_attention.Sam2MemoryConditioning) together equal
SAM2Base._prepare_memory_conditioned_features, under the packaged flags and under others the
configs allow (fewer conditioning frames, a memory stride, unsigned or future pointers),
forward and in reverse; exported, the model runs at every memory and pointer count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from build_engines.sam2_memory_attention import Sam2MemoryConditioning
from samserve.core.video_memory import (
    FrameOutput,
    conditioning_inputs,
    from_bf16,
    plan_memory,
    to_bf16,
)
from tests.support.sam2_video import tracker_config_of

COND, NUM_FRAMES = (0, 5, 11), 24


def test_bfloat16_rounds_as_torch():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([
        torch.randn(10000, generator=g) * 10.0 ** torch.randint(-30, 30, (10000,), generator=g),
        torch.tensor([0.0, -0.0, float("inf"), -float("inf"), 1.0 + 2**-8, 1.0 + 3 * 2**-8, 3.4e38, 1e-45]),
    ])  # fmt: skip
    ref = x.to(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(from_bf16(to_bf16(x.numpy())), ref)
    assert np.isnan(from_bf16(to_bf16(np.array([np.nan], np.float32)))).all()


@pytest.fixture(scope="module")
def predictor():
    from tests.support.sam2_video import scaled_video_predictor

    return scaled_video_predictor(seed=6)


def outputs(p, seed: int):
    """An object's kept outputs: conditioning frames COND, every other frame up to 20 tracked."""
    g = torch.Generator().manual_seed(seed)
    e, c, cm = p.image_size // 16, p.hidden_dim, p.mem_dim
    ref = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    ours: dict[str, dict[int, FrameOutput]] = {"cond": {}, "non_cond": {}}
    for f in range(21):
        mem = (torch.randn(1, cm, e, e, generator=g) * 2).to(torch.bfloat16)
        ptr = torch.randn(1, c, generator=g)
        key = "cond_frame_outputs" if f in COND else "non_cond_frame_outputs"
        ref[key][f] = {"maskmem_features": mem, "maskmem_pos_enc": None, "obj_ptr": ptr}
        out = FrameOutput(np.zeros((4 * e, 4 * e), np.float32), ptr[0].numpy(), 1.0, to_bf16(mem.float()[0].numpy()))
        ours["cond" if f in COND else "non_cond"][f] = out
    return ref, ours


FLAGS = {
    "packaged": {},
    "two conditioning frames, stride 2": {"max_cond_frames_in_attn": 2, "memory_temporal_stride_for_eval": 2},
    "unsigned pointers from the future too": {
        "use_signed_tpos_enc_to_obj_ptrs": False,
        "only_obj_ptrs_in_the_past_for_eval": False,
    },
}


@pytest.mark.parametrize("flags", FLAGS, ids=list(FLAGS))
@pytest.mark.parametrize("frame_idx,reverse", [(8, False), (15, False), (3, True), (16, True)])
@torch.no_grad()
def test_the_chosen_memories_condition_the_frame_as_the_reference_does(predictor, flags, frame_idx, reverse):
    saved = {k: getattr(predictor, k) for k in FLAGS[flags]}
    try:
        for k, v in FLAGS[flags].items():
            setattr(predictor, k, v)
        ref_out, ours = outputs(predictor, seed=frame_idx)
        e, c = predictor.image_size // 16, predictor.hidden_dim
        mem_pos = [predictor.memory_encoder.position_encoding(torch.zeros(1, predictor.mem_dim, e, e))]
        for out in [*ref_out["cond_frame_outputs"].values(), *ref_out["non_cond_frame_outputs"].values()]:
            out["maskmem_pos_enc"] = mem_pos
        vision = torch.randn(1, c, e, e, generator=torch.Generator().manual_seed(99))
        pos = predictor.image_encoder.neck.position_encoding(torch.zeros(1, c, e, e))
        seq = lambda x: x.flatten(2).permute(2, 0, 1)  # noqa: E731
        ref = predictor._prepare_memory_conditioned_features(
            frame_idx, False, [seq(vision)], [seq(pos)], [(e, e)], ref_out, NUM_FRAMES, track_in_reverse=reverse
        )
        flags_now = tracker_config_of(predictor).memory
        plan = plan_memory(frame_idx, ours["cond"], ours["non_cond"], NUM_FRAMES, reverse, flags_now)
        assert plan.shape[1] > 0  # the reference fails without pointers (its bf16 memory is never widened)
        x = [torch.from_numpy(a) for a in conditioning_inputs([plan])]
        got = Sam2MemoryConditioning(predictor).eval()(vision, *x)
    finally:
        for k, v in saved.items():
            setattr(predictor, k, v)
    assert ref.std() > 0.1
    torch.testing.assert_close(got, ref, atol=3e-5, rtol=1e-5)


@torch.no_grad()
def test_exported_it_runs_at_every_memory_and_pointer_count(predictor, tmp_path):
    import onnxruntime as ort

    m = Sam2MemoryConditioning(predictor).eval()
    e, c, cm = predictor.image_size // 16, predictor.hidden_dim, predictor.mem_dim
    g = torch.Generator().manual_seed(5)

    def inputs(b: int, frames: int, ptrs: int):
        return (
            torch.randn(b, c, e, e, generator=g),
            torch.randn(b, frames, cm, e, e, generator=g),
            torch.randint(0, predictor.num_maskmem, (b, frames), generator=g),
            torch.randn(b, ptrs, c, generator=g),
            torch.rand(b, ptrs, generator=g) * 2 - 1,
        )

    names = ["vision_features", "memory", "memory_tpos", "pointers", "pointer_positions"]
    dyn = {"vision_features": {0: "b"}, "memory": {0: "b", 1: "f"}, "memory_tpos": {0: "b", 1: "f"}}
    dyn |= {"pointers": {0: "b", 1: "p"}, "pointer_positions": {0: "b", 1: "p"}}
    path = tmp_path / "conditioning.onnx"
    torch.onnx.export(
        m, inputs(2, 3, 4), str(path), input_names=names, output_names=["conditioned"], dynamic_axes=dyn,
        opset_version=17, dynamo=False,
    )  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b, frames, ptrs in [(1, 1, 0), (1, 7, 16), (3, 2, 1), (4, 7, 16)]:
        x = inputs(b, frames, ptrs)
        got = sess.run(None, {n: t.numpy() for n, t in zip(names, x, strict=True)})[0]
        np.testing.assert_allclose(got, m(*x).numpy(), atol=1e-4, rtol=1e-4)
