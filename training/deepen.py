"""Deepen a small SAM's image encoder without changing what it computes, so a deeper encoder
can go on training from a trained shallow one instead of from scratch.

A new block is inserted after each block named in `after`, as a copy of that block (the same
attention kind: windowed or global, the same window, its trained norms, qkv and position
tables) whose two residual branches' output layers (`attn.proj`, `mlp.lin2`) are zeroed: an
encoder block adds its branches to the stream, so a block whose branches output zero passes
the stream through unchanged. Training then grows the branches from zero (their gradients
are not zero: the output layers see the copied block's activations). The prompt encoder and
mask decoder are untouched.

    .venv/bin/python -m training.deepen models/sam_small_shapes.pth /tmp/deep.pth --after 0 2
"""

from __future__ import annotations

import re

import torch

from build_engines.models import load_small_state, save_small_checkpoint
from training.checkpoint_cli import checkpoint_parser

BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.(.+)$")
ZEROED = ("attn.proj.weight", "attn.proj.bias", "mlp.lin2.weight", "mlp.lin2.bias")


def deepen_state_dict(state: dict, after: list[int]) -> dict:
    """The encoder with a pass-through copy of block i inserted after each i in `after`."""
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    out = {}
    for name, t in state.items():
        m = BLOCK.match(name)
        if m:
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = t
        else:
            out[name] = t
    depth = len(blocks)
    if sorted(blocks) != list(range(depth)):
        raise ValueError(f"encoder blocks are not numbered 0..{depth - 1}: {sorted(blocks)}")
    bad = [i for i in after if not 0 <= i < depth]
    if bad or len(set(after)) != len(after) or not after:
        raise ValueError(f"after must name distinct blocks in 0..{depth - 1}, got {after}")
    new_index = 0
    for i in range(depth):
        for key, t in blocks[i].items():
            out[f"image_encoder.blocks.{new_index}.{key}"] = t
        new_index += 1
        if i in after:
            for key, t in blocks[i].items():
                out[f"image_encoder.blocks.{new_index}.{key}"] = torch.zeros_like(t) if key in ZEROED else t.clone()
            new_index += 1
    return out


def main() -> None:
    p = checkpoint_parser(__doc__)
    p.add_argument("--after", type=int, nargs="+", required=True, help="insert a pass-through block after these")
    args = p.parse_args()
    save_small_checkpoint(deepen_state_dict(load_small_state(args.src), args.after), args.dst)
    print(f"{args.src} -> {args.dst}: {len(args.after)} encoder blocks inserted after blocks {args.after}")


if __name__ == "__main__":
    main()
