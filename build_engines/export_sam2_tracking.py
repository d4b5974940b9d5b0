"""Export the SAM 2 video tracker's three per-frame models to ONNX and verify them against
PyTorch (the modules the graphs are made from equal the reference: tests/unit/
test_video_memory.py, test_sam2_tracking_heads.py, test_sam2_memory_encoder.py):

- sam2_conditioning (contract.TRACKER_MODELS; their tensors: TRACKER_IO): a tracked frame's
  features conditioned on its memories
  (sam2_memory_attention.Sam2MemoryConditioning), dynamic memory frames and pointers;
- sam2_tracking_decoder: prompt encoder + mask decoder returning all four tokens' masks, IoU,
  object pointers and the object score (sam2_tracking_decoder.Sam2TrackingDecoderOnnx);
- sam2_memory_encoder: a frame's new memory from its low-resolution logits
  (sam2_memory_encoder.ExportableMemoryEncoder).

Every input and output is batched by object (axis 0). The model given is the video
predictor (sam2_models.video_predictor_of): its flags, not the image model's.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from build_engines import torchvision_compat

torchvision_compat.install()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from samserve.contract import SAM2_CONDITIONING, SAM2_MEMORY_ENCODER, SAM2_TRACKING_DECODER, TRACKER_IO  # noqa: E402

log = logging.getLogger(__name__)
OPSET = 17


@dataclass(frozen=True)
class Graph:
    name: str  # its Triton model's (contract.TRACKER_MODELS)
    axes: dict[str, dict[int, str]]

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"

    @property
    def inputs(self) -> tuple[str, ...]:
        return TRACKER_IO[self.name][0]

    @property
    def outputs(self) -> tuple[str, ...]:
        return TRACKER_IO[self.name][1]


CONDITIONING = Graph(
    SAM2_CONDITIONING,
    {
        "vision_features": {0: "objects"},
        "memory": {0: "objects", 1: "memory_frames"},
        "memory_tpos": {0: "objects", 1: "memory_frames"},
        "pointers": {0: "objects", 1: "pointers"},
        "pointer_positions": {0: "objects", 1: "pointers"},
        "conditioned": {0: "objects"},
    },
)
TRACKING_DECODER = Graph(
    SAM2_TRACKING_DECODER,
    {
        **{n: {0: "objects"} for n in ("features", "feat_s0", "feat_s1", "mask_input", "has_mask_input")},
        "point_coords": {0: "objects", 1: "points"},
        "point_labels": {0: "objects", 1: "points"},
        **{n: {0: "objects"} for n in ("low_res_masks", "iou_predictions", "object_score_logits", "object_pointers")},
    },
)
MEMORY_ENCODER = Graph(
    SAM2_MEMORY_ENCODER,
    {n: {0: "objects"} for n in ("vision_features", "pred_masks", "object_score_logits", "maskmem_features")},
)
GRAPHS = (CONDITIONING, TRACKING_DECODER, MEMORY_ENCODER)


def tracker_config(model) -> str:
    """The video predictor's choices the tracker follows (core.video_tracking.TrackerConfig reads
    this JSON from the model's TRACKER_CONFIG parameter): read from the built model, never assumed.
    ValueError for a config the tracker does not serve."""
    if getattr(model, "clear_non_cond_mem_around_input", False):
        # sam2 1.1.0's preflight calls a method it does not define when this is set
        raise ValueError("clear_non_cond_mem_around_input is not supported (the reference cannot run with it)")
    if not model.directly_add_no_mem_embed or not model.num_maskmem:
        raise ValueError("the tracker serves SAM 2 configs that add no_mem_embed on initial frames, with memories")
    md = model.sam_mask_decoder
    no_obj = getattr(model, "no_obj_ptr", None)
    config = {
        "image_size": int(model.image_size),
        "multimask_output_in_sam": bool(model.multimask_output_in_sam),
        "multimask_output_for_tracking": bool(model.multimask_output_for_tracking),
        "multimask_min_pt_num": int(model.multimask_min_pt_num),
        "multimask_max_pt_num": int(model.multimask_max_pt_num),
        "add_all_frames_to_correct_as_cond": bool(getattr(model, "add_all_frames_to_correct_as_cond", False)),
        "non_overlap_masks": bool(getattr(model, "non_overlap_masks", False)),
        "fill_hole_area": int(getattr(model, "fill_hole_area", 0)),
        "no_mem_embed": [float(v) for v in model.no_mem_embed.detach().reshape(-1)],
        "memory": {
            "num_maskmem": int(model.num_maskmem),
            "max_cond_frames_in_attn": int(model.max_cond_frames_in_attn),
            "memory_temporal_stride_for_eval": int(model.memory_temporal_stride_for_eval),
            "use_obj_ptrs_in_encoder": bool(model.use_obj_ptrs_in_encoder),
            "max_obj_ptrs_in_encoder": int(model.max_obj_ptrs_in_encoder),
            "only_obj_ptrs_in_the_past_for_eval": bool(model.only_obj_ptrs_in_the_past_for_eval),
            "use_signed_tpos_enc_to_obj_ptrs": bool(model.use_signed_tpos_enc_to_obj_ptrs),
        },
        "heads": {
            "pred_obj_scores": bool(model.pred_obj_scores),
            "soft_no_obj_ptr": bool(model.soft_no_obj_ptr),
            "fixed_no_obj_ptr": bool(model.fixed_no_obj_ptr),
            "use_multimask_token_for_obj_ptr": bool(md.use_multimask_token_for_obj_ptr),
            "dynamic_multimask_via_stability": bool(md.dynamic_multimask_via_stability),
            "stability_delta": float(md.dynamic_multimask_stability_delta),
            "stability_thresh": float(md.dynamic_multimask_stability_thresh),
            "no_obj_ptr": None if no_obj is None else [float(v) for v in no_obj.detach().reshape(-1)],
        },
    }
    return json.dumps(config, sort_keys=True)


class _MemoryFeaturesOnly(torch.nn.Module):
    """The memory encoder without its position encoding output (a constant of the model)."""

    def __init__(self, model) -> None:
        super().__init__()
        from build_engines.sam2_memory_encoder import ExportableMemoryEncoder

        self.encoder = ExportableMemoryEncoder(model)

    def forward(self, vision_features, pred_masks, object_score_logits, mask_from_points):
        return self.encoder(vision_features, pred_masks, object_score_logits, mask_from_points)[0]


def modules(model) -> dict[str, torch.nn.Module]:
    from build_engines.sam2_memory_attention import Sam2MemoryConditioning
    from build_engines.sam2_tracking_decoder import Sam2TrackingDecoderOnnx

    return {
        CONDITIONING.name: Sam2MemoryConditioning(model).eval(),
        TRACKING_DECODER.name: Sam2TrackingDecoderOnnx(model).eval(),
        MEMORY_ENCODER.name: _MemoryFeaturesOnly(model).eval(),
    }


def example_inputs(model, graph: Graph, objects: int, seed: int, frames: int = 2, pointers: int = 3, points: int = 2):
    """Random inputs of the graph's shapes (B objects; memory frames, pointers, points)."""
    g = torch.Generator().manual_seed(seed)
    e, c, cm, s = int(model.image_size) // 16, int(model.hidden_dim), int(model.mem_dim), int(model.image_size)
    if graph is CONDITIONING:
        return (
            torch.randn(objects, c, e, e, generator=g),
            torch.randn(objects, frames, cm, e, e, generator=g),
            torch.randint(0, int(model.num_maskmem), (objects, frames), generator=g),
            torch.randn(objects, pointers, c, generator=g),
            torch.rand(objects, pointers, generator=g) * 2 - 1,
        )
    if graph is TRACKING_DECODER:
        labels = torch.randint(0, 2, (objects, points), generator=g).float()
        labels[:, -1] = -1  # the padding point
        return (
            torch.randn(objects, c, e, e, generator=g),
            torch.randn(objects, 32, 4 * e, 4 * e, generator=g),
            torch.randn(objects, 64, 2 * e, 2 * e, generator=g),
            torch.rand(objects, points, 2, generator=g) * s,
            labels,
            torch.randn(objects, 1, 4 * e, 4 * e, generator=g) * 4,
            (torch.arange(objects) % 2).float(),
        )
    return (
        torch.randn(objects, c, e, e, generator=g),
        torch.randn(objects, 1, 4 * e, 4 * e, generator=g) * 8,
        torch.randn(objects, 1, generator=g) * 3,
        torch.tensor([float(seed % 2)]),
    )


@torch.no_grad()
def export_tracking_graphs(model, out_dir: Path) -> dict[str, Path]:
    """The three graphs under out_dir (<name>.onnx), by Triton model name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for graph, module in zip(GRAPHS, modules(model).values(), strict=True):
        path = out_dir / graph.file
        torch.onnx.export(
            module,
            example_inputs(model, graph, objects=2, seed=0),
            str(path),
            input_names=list(graph.inputs),
            output_names=list(graph.outputs),
            dynamic_axes=graph.axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        paths[graph.name] = path
    log.info("exported the SAM 2 tracking graphs to %s", out_dir)
    return paths


class TrackingVerificationError(RuntimeError):
    pass


@torch.no_grad()
def verify_tracking_graphs(model, paths: dict[str, Path], tol: float = 1e-3) -> dict[str, float]:
    """ONNX Runtime against PyTorch on random inputs of several shapes (1 and 3 objects; 1 and 7
    memory frames; 0 and 16 pointers; 2 and 5 points): the largest difference per graph."""
    import onnxruntime as ort

    shapes = [dict(objects=1, frames=1, pointers=0, points=2), dict(objects=3, frames=7, pointers=16, points=5)]
    worst = {}
    for graph, module in zip(GRAPHS, modules(model).values(), strict=True):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(paths[graph.name]), opts, providers=["CPUExecutionProvider"])
        diff = 0.0
        for i, shape in enumerate(shapes):
            x = example_inputs(model, graph, seed=10 + i, **shape)
            ref = module(*x)
            ref = ref if isinstance(ref, tuple) else (ref,)
            got = sess.run(None, {n: t.numpy() for n, t in zip(graph.inputs, x, strict=True)})
            for r, o in zip(ref, got, strict=True):
                diff = max(diff, float(np.abs(r.numpy() - o).max()))
        if not diff <= tol:
            raise TrackingVerificationError(f"{graph.file}: ONNX Runtime differs from PyTorch by {diff:.3g} > {tol}")
        worst[graph.name] = diff
    log.info("tracking graphs verified: %s", worst)
    return worst
