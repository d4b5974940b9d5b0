"""training/widen.py: a wider encoder that computes what the narrow one did, then can diverge."""

from __future__ import annotations

import pytest
import torch

from build_engines.models import build_small_sam, small_architecture, small_sam_from_state_dict
from tests.support.scenes import scene_input
from training.widen import widen_state_dict


def _narrow():
    # two blocks: one windowed, one global, so both attention paths are widened
    return build_small_sam(img_size=128, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, seed=5).sam


@pytest.mark.parametrize("factor", [2, 3])
def test_widened_encoder_computes_the_same_embedding_and_masks(factor):
    torch.set_num_threads(1)
    narrow = _narrow()
    state = widen_state_dict(narrow.state_dict(), factor)
    arch = small_architecture(state)
    assert arch["encoder_embed_dim"] == 32 * factor and arch["encoder_num_heads"] == 2 * factor
    assert arch["encoder_depth"] == 2 and arch["global_attn_indexes"] == [1] and arch["img_size"] == 128
    wide = small_sam_from_state_dict(state)
    x = scene_input()
    with torch.no_grad():
        a, b = narrow.image_encoder(x), wide.image_encoder(x)
        assert torch.allclose(a, b, atol=2e-5), float((a - b).abs().max())
        pe = narrow.prompt_encoder.get_dense_pe()
        point = (torch.tensor([[[40.0, 50.0]]]), torch.tensor([[1]]))
        sparse, dense = narrow.prompt_encoder(points=point, boxes=None, masks=None)
        ma, ia = narrow.mask_decoder(a, pe, sparse, dense, multimask_output=True)
        mb, ib = wide.mask_decoder(b, pe, sparse, dense, multimask_output=True)
    assert torch.allclose(ma, mb, atol=1e-4) and torch.allclose(ia, ib, atol=1e-5)
    for name, t in narrow.state_dict().items():  # the prompt encoder and mask decoder are copied as they are
        if not name.startswith("image_encoder."):
            assert torch.equal(state[name], t), name


def test_noise_breaks_the_copies_apart_and_costs_little():
    torch.set_num_threads(1)
    narrow = _narrow()
    exact = widen_state_dict(narrow.state_dict(), 2)
    noisy = widen_state_dict(narrow.state_dict(), 2, noise=0.02, seed=1)
    assert torch.equal(noisy["image_encoder.blocks.0.norm1.weight"], exact["image_encoder.blocks.0.norm1.weight"])
    w = noisy["image_encoder.blocks.0.mlp.lin1.weight"]
    half = w.shape[0] // 2
    assert not torch.equal(w[:half], w[half:])  # the two copies of each hidden unit now differ
    qkv = "image_encoder.blocks.1.attn.qkv.weight"
    assert not torch.equal(noisy[qkv], exact[qkv])
    x = scene_input()
    with torch.no_grad():
        a, b = narrow.image_encoder(x), small_sam_from_state_dict(noisy).image_encoder(x)
    assert not torch.allclose(a, b, atol=1e-4)
    assert float((a - b).abs().mean()) < 0.05 * float(a.abs().mean())
    again = widen_state_dict(narrow.state_dict(), 2, noise=0.02, seed=1)
    assert all(torch.equal(again[k], noisy[k]) for k in noisy)  # deterministic for a seed


def test_unknown_encoder_parameters_are_refused():
    state = _narrow().state_dict()
    state["image_encoder.extra.weight"] = torch.zeros(3, 3)
    with pytest.raises(KeyError, match="extra"):
        widen_state_dict(state, 2)
    with pytest.raises(ValueError):
        widen_state_dict(_narrow().state_dict(), 0)


def test_training_goes_on_in_the_shape_of_its_init(tmp_path):
    from training.train import ARCH, initial_model

    state = widen_state_dict(_narrow().state_dict(), 2)
    path = tmp_path / "wide.pth"
    torch.save({k: v.half() for k, v in state.items()}, path)  # as training.widen writes it
    sam, arch = initial_model(path, seed=0)
    assert sam.training and arch == small_architecture(state) and arch["encoder_embed_dim"] == 64
    assert torch.equal(sam.state_dict()["image_encoder.pos_embed"], state["image_encoder.pos_embed"].half().float())
    _, fresh = initial_model(None, seed=0)
    assert fresh == ARCH
