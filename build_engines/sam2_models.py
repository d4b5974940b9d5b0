"""Load SAM 2 / SAM 2.1 image models: Meta's checkpoints (sam2.1_hiera_large.pt, ...) through the
reference's `build_sam2` with its packaged configs, or a model built from those configs with
random weights (a fixed seed), optionally scaled down by hydra overrides, for demos and tests."""

from __future__ import annotations

import re
from pathlib import Path

from build_engines import torchvision_compat
from build_engines.models import LoadedSam, state_dict_digest
from samserve.contract import FAMILIES, SAM2, checkpoint_model_id
from samserve.contract import model_id as make_model_id

torchvision_compat.install()  # sam2 imports torchvision's transforms and box ops

import torch  # noqa: E402
from sam2.build_sam import build_sam2  # noqa: E402

# model type -> the reference's packaged config (its own names: t, s, b+, l)
SAM2_CONFIGS = {
    **{f"sam2.1_hiera_{t}": f"configs/sam2.1/sam2.1_hiera_{t}.yaml" for t in ("t", "s", "b+", "l")},
    **{f"sam2_hiera_{t}": f"configs/sam2/sam2_hiera_{t}.yaml" for t in ("t", "s", "b+", "l")},
    "sam2.1_scaled": "configs/sam2.1/sam2.1_hiera_t.yaml",
}
# SAM2Transforms' normalisation, on the 0-1 scale (the image is divided by 255 first)
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)
# "sam2.1_scaled" checkpoints carry the hydra overrides they were built with under this key
# (build_sam2's loader reads only "model", so the file is a SAM 2 checkpoint like any other)
OVERRIDES_KEY = "samserve_overrides"
# hiera_t shrunk: S=256, a narrow 5-block trunk with one global-attention block; the neck and the
# decoder keep their size (256 channels: SAM 2's decoder and the packed embedding need them)
SCALED_OVERRIDES = (
    "++model.image_size=256",
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
)

# What a checkpoint's stored overrides may set: the sizes SCALED_OVERRIDES sets, to an integer or a
# flat list of integers. Hydra instantiates whatever a config names (`_target_`) and resolves
# interpolations (`${...}`), so a file's overrides go through nothing else: weights_only=True
# would mean nothing if the file could name a callable for Hydra to call.
ALLOWED_OVERRIDE_KEYS = frozenset(o.removeprefix("++").split("=", 1)[0] for o in SCALED_OVERRIDES)
_OVERRIDE = re.compile(r"\+\+(?P<key>[a-z0-9_.]+)=(?P<value>-?[0-9]{1,6}|\[-?[0-9]{1,6}(?:,-?[0-9]{1,6}){0,15}\])")


def checked_overrides(stored: object, path: Path) -> list[str]:
    """A checkpoint's stored overrides, each `++KEY=VALUE` with KEY one of ALLOWED_OVERRIDE_KEYS and
    VALUE an integer or a flat list of integers; ValueError naming the first that is not."""
    if not isinstance(stored, (list, tuple)) or len(stored) > len(ALLOWED_OVERRIDE_KEYS):
        raise ValueError(
            f"{path}: {OVERRIDES_KEY} must be a list of at most {len(ALLOWED_OVERRIDE_KEYS)} overrides, "
            f"got {type(stored).__name__}"
        )
    checked = []
    for i, item in enumerate(stored):
        match = _OVERRIDE.fullmatch(item) if isinstance(item, str) else None
        if match is None or match["key"] not in ALLOWED_OVERRIDE_KEYS:
            shown = repr(item)[:120]
            raise ValueError(
                f"{path}: {OVERRIDES_KEY}[{i}] = {shown} is refused: an override is ++KEY=VALUE with KEY one of "
                f"{', '.join(sorted(ALLOWED_OVERRIDE_KEYS))} and VALUE an integer or a list of integers"
            )
        checked.append(item)
    return checked


def is_sam2(model_type: str) -> bool:
    return FAMILIES.get(model_type) == SAM2


def _check_type(model_type: str) -> str:
    if model_type not in SAM2_CONFIGS:
        raise ValueError(f"not a SAM 2 model type: {model_type!r}; one of {', '.join(SAM2_CONFIGS)}")
    return SAM2_CONFIGS[model_type]


def load_sam2_checkpoint(path: str | Path, model_type: str) -> LoadedSam:
    """A released checkpoint (a dict with the SAM2Base state_dict under "model") through
    build_sam2 and its config for `model_type`; the reference loads it strictly (a SAM 2.1
    checkpoint does not load into a SAM 2.0 config) and on the CPU."""
    config = _check_type(model_type)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    overrides: list[str] = []
    if model_type == "sam2.1_scaled":
        saved = torch.load(path, map_location="cpu", weights_only=True)
        overrides = checked_overrides(saved.get(OVERRIDES_KEY, list(SCALED_OVERRIDES)), path)
    try:
        model = build_sam2(config, str(path), device="cpu", mode="eval", hydra_overrides_extra=overrides)
    except RuntimeError as exc:  # load_state_dict's missing / unexpected keys
        raise ValueError(f"{path} is not a {model_type} checkpoint: {exc}") from None
    weights_id = checkpoint_model_id(model_type, path)
    return LoadedSam(model, model_type, weights_id, random_weights=False, overrides=tuple(overrides))


@torch.no_grad()
def build_sam2_model(model_type: str = "sam2.1_scaled", seed: int = 0, overrides: tuple[str, ...] = ()) -> LoadedSam:
    """The model build_sam2 makes from `model_type`'s config (plus `overrides`; the scaled type
    adds SCALED_OVERRIDES), weights drawn from `seed`. Hiera's positional embeddings and
    no_mem_embed start at zero and the norms at identity, which would hide code paths from a
    comparison: those are drawn too."""
    config = _check_type(model_type)
    if model_type == "sam2.1_scaled":
        overrides = (*SCALED_OVERRIDES, *overrides)
    torch.manual_seed(seed)
    model = build_sam2(config, None, device="cpu", mode="eval", hydra_overrides_extra=list(overrides))
    trunk = model.image_encoder.trunk
    trunk.pos_embed.normal_(0.0, 0.5)
    trunk.pos_embed_window.normal_(0.0, 0.5)
    model.no_mem_embed.normal_(0.0, 0.5)
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "LayerNorm2d":
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
    model.eval()
    weights_id = make_model_id(model_type, state_dict_digest(model))
    return LoadedSam(model, model_type, weights_id, random_weights=True, overrides=tuple(overrides))


def save_sam2_checkpoint(loaded: LoadedSam, path: str | Path) -> Path:
    """The released checkpoints' layout ({"model": state_dict}); a scaled model's overrides
    beside it, so load_sam2_checkpoint rebuilds its shape."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": {k: v.detach().cpu() for k, v in loaded.sam.state_dict().items()}}
    if loaded.model_type == "sam2.1_scaled":
        state[OVERRIDES_KEY] = list(loaded.overrides or SCALED_OVERRIDES)
    torch.save(state, path)
    return path


def feature_sizes(model) -> list[tuple[int, int]]:
    """SAM2ImagePredictor._bb_feat_sizes for the model's input size (the reference hard-codes
    1024's; a predictor of a scaled-down model needs them set)."""
    s = int(model.image_size)
    return [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]


@torch.no_grad()
def video_predictor_of(loaded: LoadedSam):
    """The SAM2VideoPredictor that build_sam2_video_predictor makes from `loaded`'s config (its
    own overrides: binarised click masks in memory, the stability fallback, ...) with `loaded`'s
    weights: the tracker's flags are this model's, never the image model's."""
    from sam2.build_sam import build_sam2_video_predictor

    config = _check_type(loaded.model_type)
    video = build_sam2_video_predictor(
        config, None, device="cpu", mode="eval", hydra_overrides_extra=list(loaded.overrides)
    )
    video.load_state_dict(loaded.sam.state_dict(), strict=True)
    return video.eval()
