"""Load SAM models: Meta's checkpoints through `sam_model_registry`, or a small model built
from the same reference classes (random weights with a fixed seed) for demos and tests."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from build_engines import timm_compat, torchvision_compat
from samserve.contract import FAMILIES, MODEL_TYPES, SAM2, checkpoint_model_id
from samserve.contract import model_id as make_model_id

torchvision_compat.install()
timm_compat.install()  # MobileSAM's TinyViT imports four timm symbols; timm needs torchvision

import torch  # noqa: E402
from mobile_sam import sam_model_registry as mobile_sam_registry  # noqa: E402
from segment_anything import sam_model_registry  # noqa: E402
from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

# SAM's pixel normalisation, as the reference's _build_sam sets it for every checkpoint
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class LoadedSam:
    sam: Sam  # or, for the SAM 2 family, sam2's SAM2Base
    model_type: str  # one of MODEL_TYPES
    model_id: str  # identifies the weights: changes whenever they do
    random_weights: bool
    overrides: tuple[str, ...] = ()  # SAM 2: the hydra overrides of the config it was built from

    @property
    def family(self) -> str:
        return FAMILIES[self.model_type]

    @property
    def img_size(self) -> int:
        if self.family == SAM2:
            return int(self.sam.image_size)
        return int(self.sam.image_encoder.img_size)


def state_dict_digest(sam: Sam) -> str:
    """sha256 over parameter names, shapes and bytes: stable across processes for equal weights."""
    h = hashlib.sha256()
    for name, tensor in sorted(sam.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def small_architecture(state_dict: dict) -> dict:
    """build_small_sam's arguments, read off a state_dict's shapes (pos_embed: input size and
    width; blocks: depth; rel_pos: head width, window size, which blocks attend globally)."""
    pos = state_dict["image_encoder.pos_embed"]
    tokens, width = int(pos.shape[1]), int(pos.shape[-1])
    depth = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("image_encoder.blocks."))
    head_dim = int(state_dict["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
    spans = [int(state_dict[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) for i in range(depth)]
    global_blocks = [i for i, n in enumerate(spans) if n == 2 * tokens - 1]
    windows = {(n + 1) // 2 for i, n in enumerate(spans) if i not in global_blocks}
    return {
        "img_size": tokens * 16,
        "encoder_embed_dim": width,
        "encoder_depth": depth,
        "encoder_num_heads": width // head_dim,
        "global_attn_indexes": global_blocks,
        "window_size": windows.pop() if windows else 7,
    }


def small_sam_from_state_dict(state_dict: dict) -> Sam:
    """A small SAM in the shape its weights have (small_architecture), those weights loaded
    (float16 weights are copied into float32 parameters)."""
    sam = build_small_sam(**small_architecture(state_dict)).sam
    sam.load_state_dict(state_dict)
    return sam


def save_small_checkpoint(state_dict: dict, path: str | Path) -> None:
    """Write a small model's weights as load_checkpoint(path, "small") reads them: the
    reference's state_dict format, floating-point tensors in float16 (half the bytes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in state_dict.items()}  # a model trained on a GPU loads anywhere
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()}, path)


def load_small_state(path: str | Path) -> dict:
    """A small checkpoint's state_dict, as save_small_checkpoint wrote it (tensors only)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(checkpoint: str | Path, model_type: str) -> LoadedSam:
    """Meta's checkpoints (sam_vit_b_01ec64.pth, ...) through sam_model_registry, MobileSAM's
    mobile_sam.pt (vit_t) through mobile_sam's, SAM 2 / 2.1's (sam2.1_hiera_large.pt, ...)
    through build_sam2, or a "small" checkpoint of SAM's architecture
    with a scaled-down encoder (its shape read off the weights)."""
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}")
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if FAMILIES[model_type] == SAM2:  # sam2.1_hiera_large.pt, ...: through build_sam2
        from build_engines.sam2_models import load_sam2_checkpoint

        return load_sam2_checkpoint(path, model_type)
    model_id = checkpoint_model_id(model_type, path)
    if model_type == "vit_t":  # mobile_sam.pt: a plain state_dict, loaded strictly
        sam = mobile_sam_registry["vit_t"](None)
        sam.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return LoadedSam(sam.eval(), "vit_t", model_id, random_weights=False)  # eval() again: TinyViT's biases
    if model_type == "small":
        sam = small_sam_from_state_dict(torch.load(path, map_location="cpu"))
        return LoadedSam(sam.eval(), "small", model_id, random_weights=False)
    sam = sam_model_registry[model_type](checkpoint=str(path)).eval()
    return LoadedSam(sam, model_type, model_id, random_weights=False)


@torch.no_grad()
def build_mobile_sam(seed: int = 0) -> LoadedSam:
    """MobileSAM (vit_t) as mobile_sam's registry builds it, random weights drawn from `seed`.
    TinyViT only takes 1024 px inputs. Its default initialisation zeroes the attention biases,
    one BatchNorm weight in each MBConv block, the running statistics and Linear biases, and sets
    the norms to identity, which would hide code paths from a comparison: those are drawn too.
    eval() last (it copies the attention biases)."""
    torch.manual_seed(seed)
    sam = mobile_sam_registry["vit_t"](None)
    for name, t in sam.image_encoder.named_parameters():
        if name.endswith("attention_biases"):
            t.normal_(0.0, 0.5)
    for m in sam.image_encoder.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
            m.running_mean.normal_(0.0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
        elif isinstance(m, torch.nn.LayerNorm) or type(m).__name__ == "LayerNorm2d":
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.1)
        elif isinstance(m, torch.nn.Linear) and m.bias is not None:
            m.bias.normal_(0.0, 0.02)
    sam.eval()
    return LoadedSam(sam, "vit_t", make_model_id("vit_t", state_dict_digest(sam)), random_weights=True)


def build_small_sam(
    img_size: int = 256,
    encoder_embed_dim: int = 64,
    encoder_depth: int = 2,
    encoder_num_heads: int = 2,
    seed: int = 0,
    global_attn_indexes: list[int] | None = None,
    window_size: int = 7,
) -> LoadedSam:
    """SAM's exact architecture with a scaled-down image encoder and full-size prompt
    encoder / mask decoder, as `_build_sam` wires them, with weights drawn from `seed`."""
    if img_size % 16:
        raise ValueError(f"img_size must be a multiple of the patch size 16, got {img_size}")
    prompt_embed_dim = 256
    embedding_size = img_size // 16
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=encoder_depth,
            embed_dim=encoder_embed_dim,
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=encoder_num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_attn_indexes if global_attn_indexes is not None else [encoder_depth - 1],
            window_size=window_size,
            out_chans=prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_embed_dim,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_embed_dim, mlp_dim=2048, num_heads=8),
            transformer_dim=prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    ).eval()
    return LoadedSam(sam, "small", make_model_id("small", state_dict_digest(sam)), random_weights=True)
