"""SAM 2's memory attention, rewritten for export (real cos/sin rotary encoding, memory and
object pointers as two inputs), equals the reference's MemoryAttention, in PyTorch and once
exported to ONNX and run by ONNX Runtime at several memory lengths."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from build_engines.sam2_memory_attention import ExportableMemoryAttention, feat_size_of

B, C, CM = 2, 256, 64  # objects, d_model, memory channels


@pytest.fixture(scope="module")
def model():
    from build_engines.sam2_models import build_sam2_model

    return build_sam2_model("sam2.1_scaled", seed=3).sam


def inputs(model, frames: int, pointer_tokens: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    hw = feat_size_of(model) ** 2
    curr, curr_pos = torch.randn(B, hw, C, generator=g), torch.randn(B, hw, C, generator=g)
    mem, mem_pos = torch.randn(B, frames * hw, CM, generator=g), torch.randn(B, frames * hw, CM, generator=g)
    ptr, ptr_pos = torch.randn(B, pointer_tokens, CM, generator=g), torch.randn(B, pointer_tokens, CM, generator=g)
    return curr, curr_pos, mem, mem_pos, ptr, ptr_pos


@torch.no_grad()
def reference(model, curr, curr_pos, mem, mem_pos, ptr, ptr_pos):
    """As SAM2Base._prepare_memory_conditioned_features calls it: sequence first, the pointers
    concatenated after the spatial memories and excluded from the rotation."""
    t = lambda x: x.transpose(0, 1)  # noqa: E731
    out = model.memory_attention(
        curr=t(curr),
        curr_pos=t(curr_pos),
        memory=t(torch.cat((mem, ptr), 1)),
        memory_pos=t(torch.cat((mem_pos, ptr_pos), 1)),
        num_obj_ptr_tokens=ptr.shape[1],
    )
    return t(out)


@pytest.mark.parametrize("frames,pointer_tokens", [(1, 0), (3, 8), (7, 64)])
@torch.no_grad()
def test_the_real_rotation_equals_the_complex_one(model, frames, pointer_tokens):
    x = inputs(model, frames, pointer_tokens, seed=frames)
    ref = reference(model, *x)
    got = ExportableMemoryAttention(model.memory_attention, feat_size_of(model)).eval()(*x)
    assert ref.std() > 0.1  # not a vacuous comparison
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


@torch.no_grad()
def test_exported_once_it_runs_at_every_memory_length(model, tmp_path):
    import onnxruntime as ort

    m = ExportableMemoryAttention(model.memory_attention, feat_size_of(model)).eval()
    names = ["curr", "curr_pos", "memory", "memory_pos", "pointers", "pointers_pos"]
    dyn = {"memory": {1: "m"}, "memory_pos": {1: "m"}, "pointers": {1: "p"}, "pointers_pos": {1: "p"}}
    for n in names:
        dyn.setdefault(n, {})[0] = "b"
    path = tmp_path / "memory_attention.onnx"
    torch.onnx.export(
        m, inputs(model, 2, 4, seed=0), str(path), input_names=names, output_names=["conditioned"],
        dynamic_axes=dyn, opset_version=17, dynamo=False,
    )  # fmt: skip
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for frames, ptr in [(1, 4), (2, 4), (5, 16), (7, 64)]:
        x = inputs(model, frames, ptr, seed=10 + frames)
        got = sess.run(None, {n: t.numpy() for n, t in zip(names, x, strict=True)})[0]
        np.testing.assert_allclose(got, reference(model, *x).numpy(), atol=1e-4, rtol=1e-4)
