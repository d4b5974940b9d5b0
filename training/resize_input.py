"""Grow a trained small SAM to a larger input size, so it can go on training at a finer
resolution instead of starting from scratch.

SAM resizes every image to its input size S; a shape then spans `factor` times more patches
and low-res mask cells. The encoder's weights do not depend on S except for its position
terms, which are stretched so that a position (or distance) in the new token grid means what
the same place in the image meant before:

- the absolute position embedding (S/16 x S/16 tokens) is resampled bicubically, as ViTs are
  fine-tuned at a higher resolution;
- each block's relative position tables (2 * span - 1 entries per axis: span is S/16 for the
  global-attention blocks, the window size for the others) are sampled at distance d / factor,
  linearly, and held at their ends beyond the old range. `window` sets the windowed blocks'
  new window size (default: the old one times the factor).

The prompt encoder and mask decoder are size-agnostic (points are normalised by S; the mask
decoder's convolutions and attention run on any grid) and are copied as they are.
The grown model does not compute what the old one did (each 16-px patch now covers
16 / factor pixels of the image); it is a starting point for training on.

    .venv/bin/python -m training.resize_input models/sam_small_shapes.pth /tmp/s512/init.pth --img-size 512 --window 16
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from build_engines.models import load_small_state, save_small_checkpoint
from training.checkpoint_cli import checkpoint_parser

ENC = "image_encoder."
PATCH = 16


def stretch_rel_pos(table: torch.Tensor, new_len: int, factor: float) -> torch.Tensor:
    """(2k - 1, C) table of distances -(k-1)..(k-1) -> (new_len, C): entry for distance d is the
    old table at d / factor, linearly interpolated, clamped to the old range."""
    old_len = table.shape[0]
    d = torch.arange(new_len, dtype=torch.float64) - (new_len - 1) / 2
    pos = (d / factor + (old_len - 1) / 2).clamp(0, old_len - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=old_len - 1)
    w = (pos - lo).to(table.dtype)[:, None]
    return table[lo] * (1 - w) + table[hi] * w


def resize_state_dict(state: dict, img_size: int, window: int | None = None) -> dict:
    """The checkpoint's encoder for an img_size x img_size input (see the module's docstring)."""
    if img_size % PATCH:
        raise ValueError(f"img_size must be a multiple of the patch size {PATCH}, got {img_size}")
    pos = state[ENC + "pos_embed"]  # (1, t, t, E)
    old_tokens, new_tokens = int(pos.shape[1]), img_size // PATCH
    factor = new_tokens / old_tokens
    out = {}
    for name, t in state.items():
        t = t.float()
        if name == ENC + "pos_embed":
            grid = t.permute(0, 3, 1, 2)
            t = F.interpolate(grid, size=(new_tokens, new_tokens), mode="bicubic", align_corners=False)
            t = t.permute(0, 2, 3, 1).contiguous()
        elif name.startswith(ENC) and name.endswith((".attn.rel_pos_h", ".attn.rel_pos_w")):
            span = (t.shape[0] + 1) // 2
            windowed = window if window is not None else round(span * factor)
            new_span = new_tokens if span == old_tokens else windowed  # global-attention blocks span the grid
            t = stretch_rel_pos(t, 2 * new_span - 1, factor)
        out[name] = t
    return out


def main() -> None:
    p = checkpoint_parser(__doc__)
    p.add_argument("--img-size", type=int, required=True, help="the new input size S (a multiple of 16)")
    p.add_argument("--window", type=int, default=None, help="window size of the windowed blocks (default: scaled)")
    args = p.parse_args()
    save_small_checkpoint(resize_state_dict(load_small_state(args.src), args.img_size, args.window), args.dst)
    print(f"wrote {args.dst}: input {args.img_size}")


if __name__ == "__main__":
    main()
