"""SamAutomaticMaskGenerator's options: defaults equal the reference's; validation names the
option and its allowed range; the work budget (points x crops) is known before any work."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import ClassVar

from samserve.core.amg import generate_crop_boxes
from samserve.core.errors import InvalidInput, Overloaded
from samserve.core.preprocess import check_resizable

# the generators' defaults that differ: SamAutomaticMaskGenerator (SAM, MobileSAM) and
# SAM2AutomaticMaskGenerator
PRED_IOU_THRESH = {"sam": 0.88, "mobile_sam": 0.88, "sam2": 0.8}
SAM2_ONLY = {"use_m2m": False, "multimask_output": True, "mask_threshold": 0.0}  # SAM's generator: fixed


@dataclass(frozen=True)
class AmgOptions:
    """The generator's options. pred_iou_thresh None: the family's default (for_family); the
    last three are SAM2AutomaticMaskGenerator's own (SAM's generator has them fixed at the
    values given here)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float | None = None
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    use_m2m: bool = False
    multimask_output: bool = True
    mask_threshold: float = 0.0

    # (low, high, what) for every option; checked in validate()
    RANGES: ClassVar[dict[str, tuple[float, float, str]]] = {
        "points_per_side": (1, 256, "an integer in [1, 256]"),
        "points_per_batch": (1, 1024, "an integer in [1, 1024]"),
        "pred_iou_thresh": (0.0, 1.0, "a number in [0, 1]"),
        "stability_score_thresh": (0.0, 1.0, "a number in [0, 1]"),
        "stability_score_offset": (0.0, 1000.0, "a number in [0, 1000]"),
        "box_nms_thresh": (0.0, 1.0, "a number in [0, 1]"),
        "crop_n_layers": (0, 4, "an integer in [0, 4]"),
        "crop_nms_thresh": (0.0, 1.0, "a number in [0, 1]"),
        "crop_overlap_ratio": (0.0, 0.99, "a number in [0, 0.99]"),
        "crop_n_points_downscale_factor": (1, 64, "an integer in [1, 64]"),
        "min_mask_region_area": (0, 1 << 30, "an integer in [0, 2^30]"),
        "mask_threshold": (-100.0, 100.0, "a number in [-100, 100]"),
    }

    def for_family(self, family: str) -> AmgOptions:
        """The options as the family's generator takes them: its default pred_iou_thresh
        filled in; InvalidInput for a SAM 2 option set on a model of another family."""
        for name, fixed in SAM2_ONLY.items():
            if family != "sam2" and getattr(self, name) != fixed:
                raise InvalidInput(
                    f"options.{name}: a SAM 2 generator option; this model's family ({family}) has no such "
                    f"option (leave it unset)"
                )
        if self.pred_iou_thresh is not None:
            return self
        return replace(self, pred_iou_thresh=PRED_IOU_THRESH.get(family, PRED_IOU_THRESH["sam"]))

    def validate(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("use_m2m", "multimask_output"):
                if not isinstance(value, bool):
                    raise InvalidInput(f"options.{f.name} = {value!r}; must be true or false")
                continue
            if value is None and f.name == "pred_iou_thresh":
                continue
            low, high, what = self.RANGES[f.name]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise InvalidInput(f"options.{f.name} = {value!r}; must be {what}")
            if not low <= value <= high:
                raise InvalidInput(f"options.{f.name} = {value:g}; must be {what}")
        for layer in range(self.crop_n_layers + 1):
            if self.points_per_layer(layer) < 1:
                raise InvalidInput(
                    f"options.crop_n_points_downscale_factor = {self.crop_n_points_downscale_factor}: crop layer "
                    f"{layer} would get no points (points_per_side {self.points_per_side} / "
                    f"{self.crop_n_points_downscale_factor}^{layer} < 1)"
                )

    def points_per_layer(self, layer: int) -> int:
        return int(self.points_per_side / (self.crop_n_points_downscale_factor**layer)) ** 2

    def total_points(self) -> int:
        """Decoder prompts the request will run: crop layer i has 4^i crops; SAM 2's mask-to-mask
        refinement runs each point's masks again (3 more prompts a point, 1 with one mask)."""
        points = sum(4**layer * self.points_per_layer(layer) for layer in range(self.crop_n_layers + 1))
        return points * (1 + (3 if self.multimask_output else 1)) if self.use_m2m else points

    def encoder_runs(self) -> int:
        return sum(4**layer for layer in range(self.crop_n_layers + 1))

    def check_budget(self, max_points: int) -> None:
        """What is known from the options alone: decoder prompts over all crops, encoder runs."""
        total = self.total_points()
        if total > max_points:
            raise Overloaded(
                f"options: this request would run {total} point prompts over {self.encoder_runs()} crops; the "
                f"configured budget is {max_points} (lower points_per_side, crop_n_layers, or raise "
                "crop_n_points_downscale_factor)"
            )

    def check_image_budget(
        self,
        original_size: tuple[int, int],
        img_size: int,
        max_encoder_runs: int,
        max_mask_pixels: int,
        square_resize: bool = False,
    ) -> None:
        """What needs the image's size, checked before any model runs: the encoder runs (the
        whole image and every crop), every crop resizable for the model, and the mask pixels
        upsampled at most (3 masks a point prompt, each at its crop's size, were every mask to
        pass the predicted-IoU filter)."""
        runs = self.encoder_runs()
        if runs > max_encoder_runs:
            raise Overloaded(
                f"options: crop_n_layers = {self.crop_n_layers} needs {runs} encoder runs (the image and its "
                f"crops); the configured budget is {max_encoder_runs} (lower crop_n_layers)"
            )
        boxes, layers = generate_crop_boxes(original_size, self.crop_n_layers, self.crop_overlap_ratio)
        pixels = 0
        for (x0, y0, x1, y1), layer in zip(boxes, layers, strict=True):
            if x1 <= x0 or y1 <= y0:
                h, w = original_size
                raise InvalidInput(
                    f"options: crop_n_layers = {self.crop_n_layers} is too many for a {w}x{h} image: its crops "
                    "would be empty (lower crop_n_layers)"
                )
            if not square_resize:  # SAM 2 resizes every crop to a square: any aspect ratio fits
                check_resizable(y1 - y0, x1 - x0, img_size, f"options: crop ({x0}, {y0}, {x1}, {y1}) of the image")
            masks = 3 if self.multimask_output else 1
            pixels += masks * self.points_per_layer(layer) * (y1 - y0) * (x1 - x0)
        if pixels > max_mask_pixels:
            h, w = original_size
            raise Overloaded(
                f"options: on a {w}x{h} image this request may upsample {pixels} mask pixels; the configured "
                f"budget is {max_mask_pixels} (lower points_per_side or crop_n_layers, or send a smaller image)"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> AmgOptions:
        data = json.loads(text)
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise InvalidInput(f"options: unknown {sorted(unknown)}")
        opts = cls(**data)
        opts.validate()
        return opts
