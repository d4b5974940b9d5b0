"""training/resize_input.py: a trained small SAM grown to a larger input keeps what its
position terms mean, loads through the service's path and runs at the new size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from build_engines.models import build_small_sam, small_architecture, small_sam_from_state_dict
from training.resize_input import resize_state_dict, stretch_rel_pos
from training.synthetic import make_scene, random_size


def _small():
    # two blocks: one windowed (window 7), one global, so both kinds of position table are stretched
    return build_small_sam(img_size=128, encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2, seed=5).sam


def test_stretched_table_reads_the_old_one_at_distance_over_factor():
    old = torch.randn(13, 4, generator=torch.Generator().manual_seed(0))  # distances -6..6
    new = stretch_rel_pos(old, 31, 2.0)  # distances -15..15
    for k in range(-6, 7):
        assert torch.allclose(new[15 + 2 * k], old[6 + k])  # d = 2k reads old k exactly
    for k in range(-6, 6):
        assert torch.allclose(new[15 + 2 * k + 1], (old[6 + k] + old[6 + k + 1]) / 2)  # halfway: the mean
    assert torch.equal(new[:3], old[:1].expand(3, 4)) and torch.equal(new[-3:], old[-1:].expand(3, 4))


def test_same_size_is_the_identity():
    state = _small().state_dict()
    same = resize_state_dict(state, 128, window=7)
    assert same.keys() == state.keys()
    for k, v in state.items():
        assert torch.allclose(same[k], v.float(), atol=1e-6), k


@pytest.mark.parametrize("window, expected_window", [(None, 14), (8, 8)])
def test_grown_checkpoint_loads_at_the_new_size_and_segments_a_scene(window, expected_window):
    from segment_anything import SamPredictor

    torch.set_num_threads(1)
    state = resize_state_dict(_small().state_dict(), 256, window=window)
    arch = small_architecture(state)
    assert arch["img_size"] == 256 and arch["window_size"] == expected_window
    assert arch["global_attn_indexes"] == [1] and arch["encoder_embed_dim"] == 32
    assert state["image_encoder.pos_embed"].shape == (1, 16, 16, 32)
    sam = small_sam_from_state_dict(state)
    rng = np.random.default_rng(4)
    scene = make_scene(rng, *random_size(rng, 128))  # a scene smaller than the input: resized as served
    predictor = SamPredictor(sam)
    predictor.set_image(scene.image)
    masks, scores, low = predictor.predict(np.array([[40.0, 50.0]]), np.array([1]))
    assert masks.shape == (3, *scene.image.shape[:2]) and low.shape == (3, 64, 64)
    assert np.isfinite(scores).all()


def test_position_embedding_is_resampled_smoothly():
    state = _small().state_dict()
    xx = torch.arange(8.0).expand(8, 8)  # old token (i, j) holds its column j
    state["image_encoder.pos_embed"] = xx[None, :, :, None].expand(1, 8, 8, 32).clone()
    grown = resize_state_dict(state, 256)["image_encoder.pos_embed"][0, :, :, 0]
    assert grown.shape == (16, 16) and torch.allclose(grown, grown[:1].expand(16, 16))  # rows stay equal
    # away from the border, new column j sits at old column (j + 0.5) / 2 - 0.5; PyTorch's bicubic
    # (a = -0.75) is not exact on a ramp, but within a tenth of an old token
    j = torch.arange(2, 14, dtype=torch.float32)
    assert (grown[0, 2:14] - ((j + 0.5) / 2 - 0.5)).abs().max() < 0.1
    assert (grown[0, 1:] > grown[0, :-1]).all()
