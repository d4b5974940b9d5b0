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


def _sine_pe(positions: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """sam2.modeling.sam2_utils.get_1d_sine_pe, on positions of any shape (..., dim)."""
    half = dim // 2
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    x = positions.unsqueeze(-1) / dim_t
    return torch.cat((x.sin(), x.cos()), dim=-1)


class Sam2MemoryConditioning(nn.Module):
    """SAM2Base._prepare_memory_conditioned_features on a tracked (not initial conditioning)
    frame, once the memories are chosen (samserve.core.video_memory chooses them): the spatial
    and temporal position encodings, the object pointers split into memory-width tokens, the
    memory attention, back to a feature map. The position encodings that do not depend on the
    video (the backbone's and the memory encoder's sine tables at this S) are constants here.

    vision_features (B, C, e, e) the frame's raw top-level features; memory (B, F, Cm, e, e) the
    chosen frames' memories (bf16 values as float32); memory_tpos (B, F) int64 each one's t_pos
    (0 conditioning, 1..num_maskmem-1 previous frames); pointers (B, P, C); pointer_positions
    (B, P) float32 each pointer's signed distance over max_obj_ptrs - 1 -> (B, C, e, e)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not model.directly_add_no_mem_embed or model.num_maskmem == 0:
            raise ValueError("the tracker serves SAM 2 configs that add no_mem_embed on initial frames, with memories")
        e, c, cm = feat_size_of(model), int(model.hidden_dim), int(model.mem_dim)
        self.attention = ExportableMemoryAttention(model.memory_attention, e)
        self.num_maskmem, self.c, self.cm = int(model.num_maskmem), c, cm
        self.maskmem_tpos_enc = model.maskmem_tpos_enc
        self.obj_ptr_tpos_proj = model.obj_ptr_tpos_proj
        self.add_tpos = bool(model.add_tpos_enc_to_obj_ptrs)
        self.tpos_dim = c if model.proj_tpos_enc_in_obj_ptrs else cm
        with torch.no_grad():
            curr_pos = model.image_encoder.neck.position_encoding(torch.zeros(1, c, e, e))
            mem_pos = model.memory_encoder.position_encoding(torch.zeros(1, cm, e, e))
        self.register_buffer("curr_pos", curr_pos.flatten(2).transpose(1, 2).contiguous(), persistent=False)
        self.register_buffer("mem_pos", mem_pos.flatten(2).transpose(1, 2)[:, None].contiguous(), persistent=False)

    def forward(
        self, vision_features: Tensor, memory: Tensor, memory_tpos: Tensor, pointers: Tensor, pointer_positions: Tensor
    ) -> Tensor:
        b, c, h, w = vision_features.shape
        frames, n_ptr, cm, k = memory.shape[1], pointers.shape[1], self.cm, self.c // self.cm
        curr = vision_features.flatten(2).transpose(1, 2)
        mem = memory.permute(0, 1, 3, 4, 2).reshape(b, frames * h * w, cm)
        tpos = self.maskmem_tpos_enc.reshape(self.num_maskmem, cm)[self.num_maskmem - memory_tpos - 1]
        mem_pos = (self.mem_pos + tpos[:, :, None, :]).reshape(b, frames * h * w, cm)
        if self.add_tpos:
            ptr_pos = self.obj_ptr_tpos_proj(_sine_pe(pointer_positions, self.tpos_dim))
        else:
            ptr_pos = torch.zeros(b, n_ptr, cm, dtype=pointers.dtype)
        ptrs = pointers.reshape(b, n_ptr * k, cm)  # each pointer split into k tokens, in order
        ptr_pos = ptr_pos.repeat_interleave(k, dim=1)
        out = self.attention(curr, self.curr_pos.expand(b, -1, -1), mem, mem_pos, ptrs, ptr_pos)
        return out.transpose(1, 2).reshape(b, c, h, w)
