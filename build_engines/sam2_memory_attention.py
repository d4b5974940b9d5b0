"""SAM 2's memory attention in an exportable form (the video tracker's per-frame conditioning).

The reference (sam2.modeling.memory_attention.MemoryAttention, layers of RoPEAttention) applies
its rotary position encoding with complex tensors (torch.polar, view_as_complex), which ONNX
has no type for. Here the same rotation is done on real pairs: for each (a, b) channel pair and
its angle's (cos, sin), (a cos - b sin, a sin + b cos), the real and imaginary parts of the
reference's complex product, with the reference's own tables (its freqs_cis, real and
imaginary parts). The memory comes as two inputs of dynamic length, the spatial memories
(rotated, one table repeat per remembered frame, as rope_k_repeat does) and the object-pointer
tokens (never rotated: num_k_exclude_rope), batch first. Verified against the reference to
float rounding (tests/unit/test_sam2_memory_attention.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """(B, heads, N, D) rotated pairwise by (N, D/2) tables."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3).type_as(x)


class _RealRoPEAttention(nn.Module):
    """One RoPEAttention with cos/sin tables for a feat_size x feat_size query grid."""

    def __init__(self, attn: nn.Module, feat_size: int) -> None:
        super().__init__()
        self.attn = attn
        cis = attn.compute_cis(end_x=feat_size, end_y=feat_size)
        self.register_buffer("cos", cis.real.float().contiguous(), persistent=False)
        self.register_buffer("sin", cis.imag.float().contiguous(), persistent=False)
        self.rope_k_repeat = attn.rope_k_repeat

    def forward(self, q: Tensor, k: Tensor, v: Tensor, n_rotated_k: Tensor | int | None = None) -> Tensor:
        a = self.attn
        q = a._separate_heads(a.q_proj(q), a.num_heads)
        k = a._separate_heads(a.k_proj(k), a.num_heads)
        v = a._separate_heads(a.v_proj(v), a.num_heads)
        q = _rotate(q, self.cos, self.sin)
        if n_rotated_k is None:  # self-attention: keys are the queries' positions
            k = _rotate(k, self.cos, self.sin)
        else:  # spatial memories (the table once a remembered frame), then unrotated pointers
            spatial, pointers = k[:, :, :n_rotated_k], k[:, :, n_rotated_k:]
            frames = spatial.shape[2] // self.cos.shape[0]
            cos, sin = self.cos.repeat(frames, 1), self.sin.repeat(frames, 1)
            k = torch.cat((_rotate(spatial, cos, sin), pointers), dim=2)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return a.out_proj(a._recombine_heads(out))


class ExportableMemoryAttention(nn.Module):
    """MemoryAttention(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens) with the memory
    split in two and every tensor batch first:

    curr, curr_pos (B, HW, C); memory, memory_pos (B, M, Cm), M = frames * HW; pointers,
    pointers_pos (B, P, Cm) -> (B, HW, C), the reference's output transposed to batch first."""

    def __init__(self, memory_attention: nn.Module, feat_size: int) -> None:
        super().__init__()
        ma = memory_attention
        if not ma.batch_first:
            raise ValueError("only batch-first memory attention (every SAM 2 config) is exported")
        self.ma = ma
        self.self_attn = nn.ModuleList(_RealRoPEAttention(layer.self_attn, feat_size) for layer in ma.layers)
        self.cross_attn = nn.ModuleList(_RealRoPEAttention(layer.cross_attn_image, feat_size) for layer in ma.layers)
        for layer in ma.layers:
            if not layer.cross_attn_image.rope_k_repeat or layer.self_attn.rope_k_repeat:
                raise ValueError("expected SAM 2's layers: self-attention without key repeat, cross-attention with it")
        self.feat_size = feat_size

    def forward(
        self, curr: Tensor, curr_pos: Tensor, memory: Tensor, memory_pos: Tensor, pointers: Tensor, pointers_pos: Tensor
    ) -> Tensor:
        ma = self.ma
        out = curr + 0.1 * curr_pos if ma.pos_enc_at_input else curr
        mem = torch.cat((memory, pointers), dim=1)
        mem_pos = torch.cat((memory_pos, pointers_pos), dim=1)
        n_spatial = memory.shape[1]
        for layer, sa, ca in zip(ma.layers, self.self_attn, self.cross_attn, strict=True):
            t = layer.norm1(out)
            q = t + curr_pos if layer.pos_enc_at_attn else t
            out = out + layer.dropout1(sa(q, q, t))
            t = layer.norm2(out)
            out = out + layer.dropout2(
                ca(
                    t + curr_pos if layer.pos_enc_at_cross_attn_queries else t,
                    mem + mem_pos if layer.pos_enc_at_cross_attn_keys else mem,
                    mem,
                    n_spatial,
                )
            )
            t = layer.norm3(out)
            out = out + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(t)))))
        return ma.norm(out)


def feat_size_of(model: nn.Module) -> int:
    """The side of the stride-16 feature grid the memory attention works on (S / 16)."""
    return -(-int(model.image_size) // 16)
