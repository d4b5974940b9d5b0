"""The video predictor the video tests compare with: build_sam2_video_predictor's model (its own
overrides: binarised click masks, multimask for tracking, ...) on the scaled 2.1 config, with
the random weights build_sam2_model draws."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def scaled_video_predictor(seed: int):
    from build_engines.sam2_models import build_sam2_model, video_predictor_of

    video = video_predictor_of(build_sam2_model("sam2.1_scaled", seed=seed))
    # drawn so that objects are judged present on some frames and absent on others: the
    # initialised head scores every object a little below zero, which would hide the present path
    head = video.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 2.0)
        last.bias.zero_()
    return video.eval()


def tracker_config_of(predictor):
    """The TrackerConfig the service gets for `predictor`: what the build writes, read back."""
    from build_engines.export_sam2_tracking import tracker_config
    from samserve.core.video_tracking import TrackerConfig

    return TrackerConfig.from_json(tracker_config(predictor))


class TorchTrackingModels:
    """The tracker's three models as the exportable PyTorch modules the Triton graphs are made
    from, run in-process (a test of the tracking flow, not of Triton)."""

    def __init__(self, predictor) -> None:
        from build_engines.sam2_memory_attention import Sam2MemoryConditioning
        from build_engines.sam2_memory_encoder import ExportableMemoryEncoder
        from build_engines.sam2_tracking_decoder import Sam2TrackingDecoderOnnx

        self.conditioning = Sam2MemoryConditioning(predictor).eval()
        self.decoder = Sam2TrackingDecoderOnnx(predictor).eval()
        self.memory_encoder = ExportableMemoryEncoder(predictor).eval()
        self.calls = {"condition": [], "decode": [], "encode_memory": []}  # batch sizes

    async def condition(self, vision, memory, memory_tpos, pointers, positions):
        self.calls["condition"].append(len(vision))
        with torch.no_grad():
            args = (vision, memory, memory_tpos, pointers, positions)
            return self.conditioning(*(torch.from_numpy(a) for a in args)).numpy()

    async def decode(self, features, feat_s0, feat_s1, coords, labels, mask_input, has_mask_input):
        self.calls["decode"].append(len(features))
        args = (features, feat_s0, feat_s1, coords, labels, mask_input, has_mask_input)
        with torch.no_grad():
            return tuple(x.numpy() for x in self.decoder(*(torch.from_numpy(a) for a in args)))

    async def encode_memory(self, vision, pred_masks, object_score_logits, from_points):
        self.calls["encode_memory"].append(len(vision))
        args = (vision, pred_masks, object_score_logits, np.array([float(from_points)], np.float32))
        with torch.no_grad():
            return self.memory_encoder(*(torch.from_numpy(a) for a in args))[0].numpy()


@torch.no_grad()
def frame_features(predictor, frame: np.ndarray):
    """A frame's FrameFeatures as the service makes them: the reference's frame loading
    (core.video_preprocess), then the image encoder's raw outputs."""
    from samserve.core.video_preprocess import preprocess_video_frame
    from samserve.core.video_tracking import FrameFeatures

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.from_numpy(preprocess_video_frame(frame, predictor.image_size, mean, std))
    fpn = predictor.forward_image(x)["backbone_fpn"]
    return FrameFeatures(fpn[-1][0].numpy(), fpn[0][0].numpy(), fpn[1][0].numpy())


@torch.no_grad()
def draw_object_scores(predictor, folder: str, points: list[list[float]]) -> None:
    """Redraws the object score head's last layer so that random weights judge an object
    present on some frames and absent on others (else every comparison would be of empty
    masks): one object clicked on frame 0 is tracked through the video, and the layer is fitted
    (least squares, on its inputs there) to scores of +4 on the clicked frame, +3 on the first
    half of the rest and -3 on the second. Tracking with the new layer changes its inputs, so
    the scores it gives are not those targets: the tests check what they get."""
    head = predictor.sam_mask_decoder.pred_obj_score_head
    last = head.layers[-1] if hasattr(head, "layers") else head
    seen: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].reshape(-1).clone()))
    try:
        state = predictor.init_state(folder)
        predictor.add_new_points_or_box(state, 0, 1, points=points, labels=[1] * len(points))
        inputs = [seen[-1]]
        for frame_idx, _, _ in predictor.propagate_in_video(state):
            if frame_idx > 0:
                inputs.append(seen[-1])
    finally:
        hook.remove()
    n = len(inputs)
    target = torch.tensor([4.0] + [3.0 if f < n // 2 else -3.0 for f in range(1, n)], dtype=torch.float64)
    x = torch.cat([torch.stack(inputs).double(), torch.ones(n, 1, dtype=torch.float64)], 1)
    solution = torch.linalg.lstsq(x, target[:, None]).solution[:, 0]
    last.weight.copy_(solution[:-1].float()[None])
    last.bias.copy_(solution[-1:].float())


@contextlib.contextmanager
def reference_hole_filling():
    """sam2's fill_holes_in_mask_scores needs its CUDA extension's connected components; on the
    CPU the reference warns and skips the filling. Here it gets a written CPU one instead
    (scipy.ndimage.label with 8-connectivity, the kernel's, and each component's area), so the
    reference fills holes as it does on a GPU, and the service (which fills them with OpenCV) is
    compared with that."""
    import sam2.utils.misc as misc
    from scipy import ndimage

    def components(mask: torch.Tensor):
        m = mask.to(torch.uint8).cpu().numpy()
        labels, counts = np.zeros(m.shape, np.int32), np.zeros(m.shape, np.int32)
        for i in range(m.shape[0]):
            lab, _ = ndimage.label(m[i, 0], structure=np.ones((3, 3), dtype=int))
            area = np.bincount(lab.ravel())
            area[0] = 0
            labels[i, 0], counts[i, 0] = lab, area[lab]
        return torch.from_numpy(labels), torch.from_numpy(counts)

    original = misc.get_connected_components
    misc.get_connected_components = components
    try:
        yield
    finally:
        misc.get_connected_components = original


def served_video_repository(work, seed: int, frames: int, height: int, width: int):
    """(video predictor, JPEG frame folder, CPU repository) of a scaled SAM 2.1 model whose
    object scores are drawn on that video (draw_object_scores), saved as a checkpoint file and
    loaded as a downloaded one is."""
    from build_engines.models import LoadedSam
    from build_engines.repository import write_cpu_repository
    from build_engines.sam2_models import SCALED_OVERRIDES, load_sam2_checkpoint, save_sam2_checkpoint
    from samserve.devtools.sample_videos import moving_shapes, shape_centre, write_jpeg_frames

    predictor = scaled_video_predictor(seed=seed)
    folder = write_jpeg_frames(moving_shapes(frames, height, width, seed), work / "frames")
    draw_object_scores(predictor, str(folder), [list(shape_centre(frames, height, width, seed, 0, 0))])
    loaded = LoadedSam(predictor, "sam2.1_scaled", "unused", False, SCALED_OVERRIDES)
    ckpt = save_sam2_checkpoint(loaded, work / "video_model.pt")
    repo = write_cpu_repository(load_sam2_checkpoint(ckpt, "sam2.1_scaled"), work / "repo")
    return predictor, folder, repo
