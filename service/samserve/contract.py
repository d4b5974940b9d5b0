"""What crosses process boundaries, written once: Triton model and tensor names, the model-config
parameters build_engines writes and the gateway and the python-backend models read, the
model-id formula and the embedding cache key. numpy only, so every side can import it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

# -- Triton models and their tensors (names follow Meta's ONNX export) ---------------------
ENCODER = "sam_encoder"
DECODER = "sam_decoder"
ENCODER_CORE = "sam_encoder_trt"  # GPU target: the TensorRT plan the sam_encoder adapter calls
DECODER_CORE = "sam_decoder_trt"  # GPU target: the TensorRT plan the sam_decoder adapter calls
AMG_GENERATE = "sam_amg_generate"
AMG = "sam_amg"  # ensemble: sam_encoder -> sam_amg_generate

ENCODER_INPUT = "images"
EMBEDDINGS = "image_embeddings"
# Every embedding travels with the id of the model that made it (the encoder says so), and the
# decoder and AMG refuse one of another model: a model swapped under a running gateway can never
# mix embeddings, whatever the gateway believes it serves.
MODEL_ID = "model_id"  # TYPE_STRING, dims [1]
ENCODER_OUTPUTS = (EMBEDDINGS, MODEL_ID)
DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input")  # the network
# sam_decoder also takes the embedding's cache key (optional): it keeps the embedding by that key
# (within RESIDENT_BYTES), and a later request may send the key alone; one whose embedding it does
# not hold (evicted, another replica, a restart) fails with NOT_RESIDENT in its message, and the
# gateway sends it again with the embedding.
EMBEDDING_KEY = "embedding_key"  # TYPE_STRING, dims [1]
NOT_RESIDENT = "embedding not resident"
DECODER_REQUEST_INPUTS = (*DECODER_INPUTS, MODEL_ID, EMBEDDING_KEY)  # what sam_decoder takes
DECODER_OUTPUTS = ("low_res_masks", "iou_predictions")
# CPU target: a second decoder network for prompts without a mask input, on one image: the image
# side of the transformer's first layer (the embedding's projections) is computed once and
# broadcast over the prompts instead of once a prompt (model_nomask.onnx beside model.onnx)
DECODER_NOMASK_INPUTS = DECODER_INPUTS[:3]
DECODER_NOMASK_FILE = "model_nomask.onnx"
# CPU target: what runs the encoder and decoder ("openvino 2026.4.1 bf16 on AMX", "onnxruntime
# 1.32.0 fp32"), an output of every response of a model whose config declares it (the gateway
# shows it in ListModels: the runtime is chosen when Triton loads the model, not at build time)
RUNTIME = "runtime"  # TYPE_STRING, dims [1]
# SAM 2 video tracking (CPU target): three per-frame graphs, every tensor batched by object on axis 0
# (max_batch_size 0: one request is one frame's objects), each refusing another model's model_id
SAM2_CONDITIONING = "sam2_conditioning"  # a tracked frame's features conditioned on its memories
SAM2_TRACKING_DECODER = "sam2_tracking_decoder"  # masks, IoU, object pointers and score
SAM2_MEMORY_ENCODER = "sam2_memory_encoder"  # a frame's new memory from its low-res logits
TRACKER_MODELS = (SAM2_CONDITIONING, SAM2_TRACKING_DECODER, SAM2_MEMORY_ENCODER)
TRACKER_IO = {
    SAM2_CONDITIONING: (
        ("vision_features", "memory", "memory_tpos", "pointers", "pointer_positions"),
        ("conditioned",),
    ),
    SAM2_TRACKING_DECODER: (
        ("features", "feat_s0", "feat_s1", "point_coords", "point_labels", "mask_input", "has_mask_input"),
        ("low_res_masks", "iou_predictions", "object_score_logits", "object_pointers"),
    ),
    SAM2_MEMORY_ENCODER: (
        ("vision_features", "pred_masks", "object_score_logits", "mask_from_points"),
        ("maskmem_features",),
    ),
}
AMG_IMAGE, AMG_ORIGINAL_SIZE, AMG_OPTIONS = "image", "original_size", "amg_options"
AMG_INPUTS = (EMBEDDINGS, AMG_IMAGE, AMG_ORIGINAL_SIZE, AMG_OPTIONS, MODEL_ID)
AMG_OUTPUTS = ("rle_counts", "boxes", "predicted_iou", "stability_score", "point_coords", "crop_boxes")

ModelType = Literal[
    "vit_b",
    "vit_l",
    "vit_h",
    "small",
    "vit_t",
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
    "sam2_hiera_t",
    "sam2_hiera_s",
    "sam2_hiera_b+",
    "sam2_hiera_l",
    "sam2.1_scaled",  # SAM 2.1's hiera_t config scaled down (its overrides saved in the checkpoint)
]
MODEL_TYPES: tuple[str, ...] = get_args(ModelType)
FP32, BF16, FP16 = "fp32", "bf16", "fp16"  # precisions (PRECISIONS: which target serves which)
# Several models in one repository: each model's set of Triton models under "<name>__", which no
# two names can share (a name has no "_"). A single-model repository keeps the bare names.
MODEL_NAME_PATTERN = r"[a-z0-9][a-z0-9-]{0,47}"
PREFIX_SEPARATOR = "__"


# the published checkpoints' file names (their start) -> model type
CHECKPOINT_TYPES = {
    "sam_vit_b": "vit_b",
    "sam_vit_l": "vit_l",
    "sam_vit_h": "vit_h",
    "mobile_sam": "vit_t",
    **{
        f"{v}_hiera_{size}.": f"{v}_hiera_{t}"
        for v in ("sam2.1", "sam2")
        for size, t in (("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l"))
    },
}


def spec_precision(spec: str) -> tuple[str, str | None]:
    """NAME=CHECKPOINT[:TYPE][@PRECISION] -> (the spec without @PRECISION, the precision or None).
    Only a known precision is taken off: "@" elsewhere stays part of the path."""
    rest, at, precision = spec.rpartition("@")
    if at and precision in (FP32, BF16, FP16):
        return rest, precision
    return spec, None


def parse_model_spec(spec: str) -> tuple[str, Path, str]:
    """NAME=CHECKPOINT[:TYPE][@PRECISION] -> (name, checkpoint, type); the type may be left out
    for the published checkpoints' file names (sam_vit_b_01ec64.pth, mobile_sam.pt, ...); the
    precision is spec_precision's."""
    spec = spec_precision(spec)[0]
    name, sep, rest = spec.partition("=")
    if not sep or not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ValueError(f"model {spec!r}: expected NAME=CHECKPOINT[:TYPE], NAME matching {MODEL_NAME_PATTERN}")
    path, colon, model_type = rest.rpartition(":")
    if not colon or "/" in model_type or "\\" in model_type:  # no :TYPE (a colon of the path's own)
        path, model_type = rest, next((v for k, v in CHECKPOINT_TYPES.items() if Path(rest).name.startswith(k)), "")
        if not model_type:
            raise ValueError(f"model {spec!r}: add :TYPE, one of {', '.join(MODEL_TYPES)}")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model {spec!r}: type {model_type!r} is not one of {', '.join(MODEL_TYPES)}")
    if not path:
        raise ValueError(f"model {spec!r}: no checkpoint path")
    return name, Path(path).expanduser(), model_type


def read_models_file(path: Path) -> list[str]:
    """A models file: one NAME=CHECKPOINT[:TYPE][@PRECISION] a line (the first the default); blank lines and
    lines starting with # are skipped. Each line is checked by parse_model_spec (ValueError
    naming the file and line)."""
    specs = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parse_model_spec(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        specs.append(line)
    if not specs:
        raise ValueError(f"{path}: no models (one NAME=CHECKPOINT[:TYPE] a line)")
    return specs


def model_prefix(name: str | None) -> str:
    return f"{name}{PREFIX_SEPARATOR}" if name else ""


# model type -> family: what preprocessing, embedding tensors and decoder inputs it has. MobileSAM
# (vit_t: a TinyViT encoder distilled from SAM's, SAM's own prompt encoder and mask decoder) is
# served through SAM's pipeline; the family is read from the served model, never guessed.
# SAM 2 / 2.1 image models (family "sam2") have their own preprocessing (a square resize, no
# padding), prompt layout, mask selection and upsampling; their embedding is three tensors, packed
# into one (see SAM2_EMBEDDING_CHANNELS) so that it is stored, cached and sent as SAM's is.
FAMILIES = {
    "vit_b": "sam",
    "vit_l": "sam",
    "vit_h": "sam",
    "small": "sam",
    "vit_t": "mobile_sam",
    **{t: "sam2" for t in MODEL_TYPES if t.startswith("sam2")},
}
SAM_PIPELINE_FAMILIES = ("sam", "mobile_sam")
SAM2 = "sam2"
SERVED_FAMILIES = (*SAM_PIPELINE_FAMILIES, SAM2)
# SAM 2's image embedding (256, e, e) + no_mem_embed, then its decoder's high-resolution features
# feat_s1 (64, 2e, 2e) and feat_s0 (32, 4e, 4e), each flattened and viewed as (256, e, e) and
# (512, e, e): one (1024, e, e) tensor. The decoder takes it apart again (exactly: reshapes only).
SAM2_EMBEDDING_CHANNELS = 1024
# Bumped whenever a repository's models change what they take or return (2: the encoder returns
# model_id, the decoder and AMG take it; GPU sam_encoder is an adapter over sam_encoder_trt; 3:
# the decoder keeps embeddings by key and takes one embedding for all its prompts; 4: every config
# states its layout, LAYOUT_PARAMETER): a repository built for another layout is rebuilt, never
# served to a gateway that expects this one, and a gateway refuses to serve one (NOT_SERVING,
# saying which layouts differ) rather than send tensors its models do not take; 5: the CPU models
# run through triton.cpu_runtime (OpenVINO, precision) and return RUNTIME.
REPOSITORY_LAYOUT = 5
LAYOUT_PARAMETER = "repository_layout"


def layout_mismatch(params: dict[str, str], model: str) -> str | None:
    """Why a Triton model of another repository layout cannot be served by this version (None
    when it is of this layout)."""
    found = params.get(LAYOUT_PARAMETER)
    if found == str(REPOSITORY_LAYOUT):
        return None
    what = f"layout {found}" if found else "layout 3 or older (its config states none)"
    return (
        f"Triton's {model} is of model repository {what}; this gateway speaks layout {REPOSITORY_LAYOUT}: "
        "rebuild the repository with this version (python -m build_engines --if-stale) or run the gateway "
        "of the repository's version"
    )


# -- model-config parameters ---------------------------------------------------------------
REQUIRED = ("model_id", "img_size", "pixel_mean", "pixel_std")
# the python-backend models' own knobs, written by build_engines beside ModelInfo's
INTRA_OP_THREADS = "intra_op_threads"  # ONNX Runtime threads (0: its default)
CORE_MODEL = "core_model"  # GPU target: the TensorRT plan the sam_decoder adapter runs over BLS
MAX_PROMPTS_PER_RUN = "max_prompts_per_run"  # prompts per decoder run (the plan's profile)
RESIDENT_BYTES = "resident_embedding_bytes"  # sam_decoder: embeddings kept by cache key (0: none)
PRECISION = "precision"  # what the networks compute in: "fp32" / "bf16" (CPU), "fp16" (GPU)
CPU_RUNTIME = "cpu_runtime"  # CPU target: "openvino" (ONNX Runtime where it fails) or "onnxruntime"
OPENVINO, ONNXRUNTIME = "openvino", "onnxruntime"
DEFAULT_RESIDENT_BYTES = 512 << 20
# a SAM 2 model that tracks video: its video predictor's choices (core.video_tracking.TrackerConfig
# as JSON), in its encoder's parameters; absent, the model serves images only
TRACKER_CONFIG = "tracker_config"


def config_parameters(model_config: dict) -> dict[str, str]:
    """A Triton model config (as JSON: what a python-backend model gets in `args["model_config"]`
    and what the gateway reads with get_model_config) -> its parameters as plain strings."""
    return {k: v.get("string_value", "") for k, v in model_config.get("parameters", {}).items()}  # "" is omitted


@dataclass(frozen=True)
class ModelInfo:
    """What a served SAM model says about itself: written by build_engines into the Triton
    configs' `parameters`, read by the gateway and by the python-backend models."""

    model_id: str
    model_type: str
    img_size: int  # S: the encoder's square input size
    pixel_mean: np.ndarray  # (3,) float32
    pixel_std: np.ndarray  # (3,) float32
    mask_threshold: float
    family: str = "sam"
    name: str = "default"  # what requests call it (the `model` field); "default" when it is the only one
    prefix: str = ""  # of its Triton models' names: "" or "<name>__"
    is_default: bool = False  # the model a request that names none gets
    resident_bytes: int = 0  # sam_decoder's budget for embeddings kept by key (0: none kept)
    precision: str = FP32  # what its networks compute in (PRECISIONS)
    runtime: str = ""  # what the build configured to run them ("openvino", "onnxruntime", "tensorrt")
    reports_runtime: bool = False  # its encoder and decoder return RUNTIME
    tracker_config: str = ""  # TRACKER_CONFIG: JSON when the model tracks video (SAM 2, CPU target), else ""

    @property
    def can_track(self) -> bool:
        return bool(self.tracker_config)

    def triton(self, model: str) -> str:
        """This model's Triton model of the given role (ENCODER, DECODER, AMG_GENERATE, ...)."""
        return self.prefix + model

    @property
    def embedding_size(self) -> int:
        return self.img_size // 16

    @property
    def embedding_channels(self) -> int:
        return SAM2_EMBEDDING_CHANNELS if self.family == SAM2 else 256

    @property
    def low_res_size(self) -> int:
        return 4 * self.embedding_size

    def to_parameters(self) -> dict[str, str]:
        """What from_parameters reads back (string values, as Triton config parameters hold)."""
        return {
            "model_id": self.model_id,
            "model_type": self.model_type,
            "img_size": str(self.img_size),
            "pixel_mean": json.dumps([float(v) for v in self.pixel_mean]),
            "pixel_std": json.dumps([float(v) for v in self.pixel_std]),
            "mask_threshold": repr(float(self.mask_threshold)),
            "family": self.family,
            "served_name": self.name,
            "model_prefix": self.prefix,
            "default_model": str(self.is_default).lower(),
            PRECISION: self.precision,
            **({TRACKER_CONFIG: self.tracker_config} if self.tracker_config else {}),
        }

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> ModelInfo:
        """From a config's parameters (string values); KeyError names what is missing."""
        missing = [k for k in REQUIRED if k not in params]
        if missing:
            raise KeyError(f"model parameters lack {missing}: rebuild the model repository")
        return cls(
            model_id=params["model_id"],
            model_type=params.get("model_type", "unknown"),
            img_size=int(params["img_size"]),
            pixel_mean=np.asarray(json.loads(params["pixel_mean"]), dtype=np.float32),
            pixel_std=np.asarray(json.loads(params["pixel_std"]), dtype=np.float32),
            mask_threshold=float(params.get("mask_threshold", "0.0")),
            family=params.get("family", "sam"),
            name=params.get("served_name", "default"),
            prefix=params.get("model_prefix", ""),
            is_default=params.get("default_model", "true") == "true",
            resident_bytes=int(params.get(RESIDENT_BYTES, "0")),
            precision=params.get(PRECISION) or params["model_id"].rsplit("-", 1)[-1],
            runtime=params.get(CPU_RUNTIME, ""),
            tracker_config=params.get(TRACKER_CONFIG, ""),
        )


# -- model ids and cache keys --------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def model_id(model_type: str, weights_sha256: str) -> str:
    """Identifies a served model: its type and the hash of its weights (the checkpoint file's,
    or for weights built in memory their state_dict digest), so new weights never share an id."""
    return f"{model_type}-{weights_sha256[:16]}"


def checkpoint_model_id(model_type: str, checkpoint: Path) -> str:
    return model_id(model_type, sha256_file(checkpoint))


TARGETS = {"cpu": FP32, "gpu": FP16}  # target -> the precision its repository serves by default
PRECISIONS = {"cpu": (FP32, BF16), "gpu": (FP16,)}  # target -> the precisions it can serve


def served_model_id(weights_id: str, target: str, precision: str | None = None) -> str:
    """The id a repository serves under (config parameter model_id, cache key, EmbedResponse):
    the weights' id, the target and the precision, so CPU FP32, CPU BF16 and GPU FP16 embeddings
    of one checkpoint never share a cache entry."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    precision = precision or TARGETS[target]
    if precision not in PRECISIONS[target]:
        raise ValueError(f"the {target} target serves {' or '.join(PRECISIONS[target])}, not {precision!r}")
    return f"{weights_id}-{target}-{precision}"


def cache_key(model_id: str, preprocess_version: str, image_sha256: str) -> str:
    """samserve:emb:{model_id}:{preprocess_version}:{sha256 of the encoded image bytes}."""
    return f"samserve:emb:{model_id}:{preprocess_version}:{image_sha256}"


def model_id_tensor(model_id: str, n: int = 1) -> np.ndarray:
    """The MODEL_ID tensor (TYPE_STRING, dims [1]) of `n` requests or batch rows: (n, 1) bytes."""
    return np.full((n, 1), model_id.encode(), dtype=np.object_)


def model_id_of(tensor: np.ndarray) -> str:
    """The model id a MODEL_ID tensor carries (its first element)."""
    value = tensor.reshape(-1)[0]
    return value.decode() if isinstance(value, bytes) else str(value)


def key_of_model(key: str, model_id: str) -> bool:
    """A cache key (cache_key) of an embedding made by `model_id`."""
    return key.startswith(f"samserve:emb:{model_id}:")


def model_mismatch(made_by: str, serves: str) -> str | None:
    """The refusal of an embedding made by another model (None when it is this model's)."""
    if made_by == serves:
        return None
    return f"model mismatch: the embedding was made by {made_by!r}; this model is {serves!r}"


def lock_key(cache_key: str) -> str:
    """The single-flight lock of one cache entry, shared by every gateway replica."""
    return cache_key + ":lock"
