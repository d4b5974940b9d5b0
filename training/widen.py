"""Widen a small SAM's image encoder without changing what it computes (Net2WiderNet), so a
wider encoder can go on training from a trained narrow one instead of from scratch.

Every channel of the encoder's residual stream, every attention head and every MLP hidden unit
is copied `factor` times; a layer reading copied channels divides its weights by `factor`, so
the sums are unchanged, and LayerNorm over copied channels sees the same mean and variance.
Heads keep their width (more heads, not wider ones), so the attention scale and the relative
position tables are unchanged. The prompt encoder and mask decoder are untouched. Copies get
identical gradients and would stay copies for ever: `noise` (a fraction of each weight
tensor's standard deviation) breaks the tie, at a small cost in what the widened model computes.

    .venv/bin/python -m training.widen models/sam_small_shapes.pth /tmp/wide.pth --factor 2
"""

from __future__ import annotations

import torch

from build_engines.models import load_small_state, save_small_checkpoint
from training.checkpoint_cli import checkpoint_parser

ENC = "image_encoder."
COPIED = (
    "norm1.weight",
    "norm1.bias",
    "norm2.weight",
    "norm2.bias",
    "attn.proj.bias",
    "mlp.lin1.bias",
    "mlp.lin2.bias",
)


def _tile_out(t: torch.Tensor, f: int, dim: int = 0) -> torch.Tensor:
    """Copy the outputs (rows / channels along `dim`) f times: [t, t, ...]."""
    return torch.cat([t] * f, dim=dim)


def _tile_in(t: torch.Tensor, f: int) -> torch.Tensor:
    """A layer reading f copies of its input: [t/f, t/f, ...] along the input dim (dim 1)."""
    return torch.cat([t / f] * f, dim=1)


def widen_state_dict(state: dict, factor: int = 2, noise: float = 0.0, seed: int = 0) -> dict:
    """The encoder widened `factor` times; everything else copied as is."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1, got {factor}")
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        t = t.float()
        if not name.startswith(ENC):
            out[name] = t
            continue
        key = name[len(ENC) :]
        if key in ("patch_embed.proj.weight", "patch_embed.proj.bias") or key.endswith(COPIED):
            w = _tile_out(t, factor)
        elif key == "pos_embed":
            w = _tile_out(t, factor, dim=-1)
        elif key.endswith("attn.qkv.weight"):  # (3E, E), rows ordered (q|k|v, head, head_dim)
            e = t.shape[1]
            w = _tile_in(_tile_out(t.reshape(3, e, e), factor, dim=1).reshape(3 * e * factor, e), factor)
        elif key.endswith("attn.qkv.bias"):
            w = _tile_out(t.reshape(3, -1), factor, dim=1).reshape(-1)
        elif key.endswith(("attn.proj.weight", "mlp.lin1.weight", "mlp.lin2.weight")):
            w = _tile_in(_tile_out(t, factor), factor)
        elif key == "neck.0.weight":  # 1x1 conv from the stream to the 256-d embedding
            w = _tile_in(t, factor)
        elif key.endswith(("rel_pos_h", "rel_pos_w")) or key.startswith("neck."):
            w = t  # per head width / after the stream: unchanged
        else:
            raise KeyError(f"don't know how to widen {name} {tuple(t.shape)}")
        if noise and w.ndim > 1 and w.shape != t.shape:
            w = w + torch.randn(w.shape, generator=gen) * (noise * float(t.std()))
        out[name] = w
    return out


def main() -> None:
    p = checkpoint_parser(__doc__)
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--noise", type=float, default=0.02, help="symmetry-breaking noise, x each weight's std")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    save_small_checkpoint(widen_state_dict(load_small_state(args.src), args.factor, args.noise, args.seed), args.dst)
    print(f"{args.src} -> {args.dst}: encoder width x{args.factor}")


if __name__ == "__main__":
    main()
