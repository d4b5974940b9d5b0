"""SAM 2's steps in numpy against the reference's own code (sam2 1.1.0): SAM2Transforms'
preprocessing, coordinate transform and mask upsampling, the decoder's single-mask fallback, the
packed embedding, and the checkpoint layout build_sam2 loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from samserve.core.postprocess import postprocess_sam2_masks, returned_logits, select_masks, stable_single_mask
from samserve.core.preprocess import preprocess_sam2
from samserve.core.prompts import Prompt, decoder_batches, normalize_coords
from samserve.devtools.sample_images import synthetic_image

MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
SHAPES = [(480, 640), (640, 427), (256, 256), (96, 1200), (1500, 333), (17, 9), (1024, 1024)]
IDS = ["landscape", "portrait", "exact", "elongated", "tall", "tiny", "large"]


@pytest.fixture(scope="module")
def sam2_model():
    from build_engines.sam2_models import build_sam2_model

    return build_sam2_model("sam2.1_scaled", seed=1).sam


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
@pytest.mark.parametrize("img_size", [256, 1024])
def test_preprocess_equals_sam2_transforms(shape, img_size):
    from sam2.utils.transforms import SAM2Transforms

    image = synthetic_image(*shape, seed=shape[1])
    ref = SAM2Transforms(resolution=img_size, mask_threshold=0.0)(image)[None].numpy()
    got, input_size = preprocess_sam2(image, img_size, MEAN, STD)
    assert input_size == (img_size, img_size) and got.dtype == np.float32 and got.shape == ref.shape
    # PIL's float filter in double precision vs torch's float32 one: equal to rounding
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


def test_coordinates_equal_transform_coords():
    from sam2.utils.transforms import SAM2Transforms

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, (50, 2)) * [777, 333]
    ref = SAM2Transforms(1024, 0.0).transform_coords(torch.as_tensor(pts, dtype=torch.float), True, (333, 777))
    np.testing.assert_array_equal(normalize_coords(pts, (333, 777), 1024), ref.numpy())


def test_prompt_layout_is_box_then_points_then_padding():
    p = Prompt(np.array([[10.0, 20.0]]), np.array([0]), box=np.array([1.0, 2.0, 30.0, 40.0]))
    (batch,) = decoder_batches([p], (100, 50), 256, 64, family="sam2")
    np.testing.assert_array_equal(batch.point_labels, [[2, 3, 0, -1]])
    np.testing.assert_allclose(batch.point_coords[0], [[5.12, 5.12], [153.6, 102.4], [51.2, 51.2], [0, 0]], rtol=1e-6)
    (sam,) = decoder_batches([p], (100, 50), 256, 64, family="sam")
    np.testing.assert_array_equal(sam.point_labels, [[0, 2, 3]])  # SAM's: points, box, no padding


@pytest.mark.parametrize("size", [(300, 520), (96, 1200), (40, 30), (64, 64)])
def test_masks_upsampled_once_as_postprocess_masks(size):
    from sam2.utils.transforms import SAM2Transforms

    low = np.random.default_rng(1).normal(0, 3, (2, 3, 64, 64)).astype(np.float32)
    ref = SAM2Transforms(256, 0.0).postprocess_masks(torch.from_numpy(low), size).numpy()
    np.testing.assert_allclose(postprocess_sam2_masks(low, size), ref, atol=1e-4, rtol=1e-5)  # as test_postprocess


def test_single_mask_fallback_equals_the_reference(sam2_model):
    """Logits built so that token 0 is stable in some rows and not in others."""
    rng = np.random.default_rng(2)
    low = rng.normal(0, 4, (6, 4, 64, 64)).astype(np.float32)
    low[:3, 0] = np.where(rng.uniform(size=(3, 64, 64)) < 0.5, 8.0, -8.0)  # far from the +-delta band
    low[4, 0] = -1.0  # nothing above -delta: stability 1 by definition
    low[5, 0] = 0.0  # all inside the band: area_u counts every pixel, area_i none (stability 0)
    iou = rng.uniform(0, 1, (6, 4)).astype(np.float32)
    ref_low, ref_iou = sam2_model.sam_mask_decoder._dynamic_multimask_via_stability(
        torch.from_numpy(low), torch.from_numpy(iou)
    )
    got_low, got_iou = stable_single_mask(low, iou)
    np.testing.assert_array_equal(got_low, ref_low.numpy())
    np.testing.assert_array_equal(got_iou, ref_iou.numpy())
    chosen = (got_iou[:, 0] == iou[:, 0]).tolist()
    assert chosen == [True, True, True, False, True, False]  # row 3: random logits, unstable
    sel_low, _ = select_masks(low, iou, False, family="sam2")
    np.testing.assert_array_equal(sel_low, got_low)
    assert np.abs(returned_logits(low * 10, "sam2")).max() == 32.0


def test_packed_embedding_round_trips():
    from build_engines.export_sam2 import pack, unpack

    g = torch.Generator().manual_seed(0)
    parts = [torch.randn(2, c, k * 16, k * 16, generator=g) for c, k in ((256, 1), (64, 2), (32, 4))]
    packed = pack(*parts)
    assert packed.shape == (2, 1024, 16, 16)
    for a, b in zip(unpack(packed), parts, strict=True):
        assert torch.equal(a, b)


def test_checkpoint_layout_loads_through_build_sam2(tmp_path):
    """The released sam2.1_hiera_t layout at full size ({"model": state_dict}), loaded through
    build_sam2 by load_checkpoint; a SAM 2.0 config refuses a 2.1 checkpoint (strict load)."""
    from build_engines.models import load_checkpoint, state_dict_digest
    from build_engines.sam2_models import build_sam2_model, save_sam2_checkpoint

    built = build_sam2_model("sam2.1_hiera_t", seed=4)
    path = save_sam2_checkpoint(built, tmp_path / "sam2.1_hiera_tiny.pt")
    assert set(torch.load(path, weights_only=True)) == {"model"}
    loaded = load_checkpoint(path, "sam2.1_hiera_t")
    assert loaded.img_size == 1024 and loaded.family == "sam2"
    assert state_dict_digest(loaded.sam) == state_dict_digest(built.sam)
    with pytest.raises(ValueError, match="not a sam2_hiera_t checkpoint"):
        load_checkpoint(path, "sam2_hiera_t")


def test_checkpoint_names_give_their_types():
    from samserve.contract import parse_model_spec

    assert parse_model_spec("big=/m/sam2.1_hiera_large.pt")[2] == "sam2.1_hiera_l"
    assert parse_model_spec("bp=/m/sam2_hiera_base_plus.pt")[2] == "sam2_hiera_b+"
    assert parse_model_spec("t=/m/x.pt:sam2.1_hiera_t")[2] == "sam2.1_hiera_t"


@pytest.mark.parametrize(
    "override",
    [
        "++model._target_=os.system",  # a callable for Hydra to instantiate
        "++model.image_encoder.trunk._target_=builtins.print",
        "++model.image_encoder.trunk.embed_dim=${oc.env:HOME}",  # an interpolation
        "++model.image_size='256'",  # a string
        "++model.image_size=256,++model._target_=x",
        "model.image_size=256",  # not an addition: another grammar
        42,  # not a string
    ],
    ids=["target", "nested-target", "interpolation", "quoted", "two-in-one", "no-plus", "not-a-string"],
)
def test_stored_overrides_outside_the_allow_list_are_refused(tmp_path, override):
    """A checkpoint's stored Hydra overrides are checked against an allow-list (keys of
    SCALED_OVERRIDES, integer values) before Hydra sees them: weights_only=True means nothing if
    the file may name a _target_ for Hydra to call."""
    from build_engines.sam2_models import OVERRIDES_KEY, SCALED_OVERRIDES, load_sam2_checkpoint

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, OVERRIDES_KEY: [*SCALED_OVERRIDES[:2], override]}, path)
    with pytest.raises(ValueError, match=rf"{OVERRIDES_KEY}\[2\] = .* is refused"):
        load_sam2_checkpoint(path, "sam2.1_scaled")
    torch.save({"model": {}, OVERRIDES_KEY: "++model.image_size=256"}, path)  # not a list
    with pytest.raises(ValueError, match="must be a list"):
        load_sam2_checkpoint(path, "sam2.1_scaled")


def test_stored_overrides_on_the_allow_list_load(tmp_path):
    from build_engines.models import state_dict_digest
    from build_engines.sam2_models import build_sam2_model, load_sam2_checkpoint, save_sam2_checkpoint

    built = build_sam2_model("sam2.1_scaled", seed=1)
    loaded = load_sam2_checkpoint(save_sam2_checkpoint(built, tmp_path / "s.pt"), "sam2.1_scaled")
    assert loaded.img_size == 256 and state_dict_digest(loaded.sam) == state_dict_digest(built.sam)
