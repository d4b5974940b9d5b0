"""training/deepen.py: a deeper encoder that computes what the shallow one did, then can learn."""

from __future__ import annotations

import pytest
import torch

from build_engines.models import build_small_sam, small_architecture, small_sam_from_state_dict
from tests.support.scenes import scene_input
from training.deepen import deepen_state_dict


def _shallow():
    # three blocks: windowed, windowed, global (as the shipped model's are, fewer)
    return build_small_sam(
        img_size=128, encoder_embed_dim=32, encoder_depth=3, encoder_num_heads=2, seed=5, global_attn_indexes=[2]
    ).sam


@pytest.mark.parametrize(("after", "globals_"), [([0], [3]), ([0, 1], [4]), ([2], [2, 3])])
def test_deepened_encoder_computes_the_same_embedding(after, globals_):
    torch.set_num_threads(1)
    shallow = _shallow()
    state = deepen_state_dict(shallow.state_dict(), after)
    arch = small_architecture(state)
    assert arch["encoder_depth"] == 3 + len(after) and arch["global_attn_indexes"] == globals_
    assert arch["encoder_embed_dim"] == 32 and arch["window_size"] == 7 and arch["img_size"] == 128
    deep = small_sam_from_state_dict(state)
    x = scene_input()
    with torch.no_grad():
        a, b = shallow.image_encoder(x), deep.image_encoder(x)
    assert torch.allclose(a, b, atol=1e-6), float((a - b).abs().max())
    for name, t in shallow.state_dict().items():  # the prompt encoder and mask decoder are copied as they are
        if not name.startswith("image_encoder.blocks."):
            assert torch.equal(state[name], t), name


def test_the_inserted_blocks_learn():
    torch.set_num_threads(1)
    deep = small_sam_from_state_dict(deepen_state_dict(_shallow().state_dict(), [0]))
    deep.image_encoder(scene_input()).square().mean().backward()
    inserted = deep.image_encoder.blocks[1]
    assert float(inserted.attn.proj.weight.grad.abs().sum()) > 0
    assert float(inserted.mlp.lin2.weight.grad.abs().sum()) > 0
    # its attention starts as block 0's (a trained start, not a random one)
    assert torch.equal(inserted.attn.qkv.weight, deep.image_encoder.blocks[0].attn.qkv.weight)


@pytest.mark.parametrize("after", [[], [3], [-1], [0, 0]])
def test_bad_positions_are_refused(after):
    with pytest.raises(ValueError, match="after"):
        deepen_state_dict(_shallow().state_dict(), after)
