"""Train a small SAM (the reference's classes; encoder scaled down, prompt encoder and mask
decoder at full size) on synthetic shapes, the way the SAM paper trains: a point from the
ground-truth mask or a noisy box, then follow-up points from the error region with the previous
low-res logits as mask input; focal + dice loss on masks (1:1 here, see --focal-weight), MSE on
the IoU head; for the ambiguous single-point prompt only the best of the three masks gets the
mask loss.

    .venv/bin/python -m training.train --out models/sam_small_shapes.pth     # about an hour on 2 cores

Deterministic for a seed (data and initialisation). Writes the checkpoint (reference
state_dict format, float16) and a JSON of its training facts and held-out metrics beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import time
from collections import deque
from functools import partial
from pathlib import Path

import numpy as np
from scipy import ndimage

from build_engines import torchvision_compat

torchvision_compat.install()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from build_engines.models import (  # noqa: E402
    PIXEL_MEAN,
    PIXEL_STD,
    build_small_sam,
    load_checkpoint,
    save_small_checkpoint,
    small_architecture,
)
from samserve.core.preprocess import resize_longest_side  # noqa: E402
from training.synthetic import make_scene, random_size  # noqa: E402

MEAN = np.array(PIXEL_MEAN, dtype=np.float32)
STD = np.array(PIXEL_STD, dtype=np.float32)
ARCH = {"img_size": 256, "encoder_embed_dim": 96, "encoder_depth": 4, "encoder_num_heads": 4}


def to_input(image: np.ndarray, s: int) -> torch.Tensor:
    """(h, w, 3) uint8 -> (3, s, s): resized to the long side s as the service does
    (ResizeLongestSide), normalised, zero-padded (Sam.preprocess)."""
    return batch_input([to_long_side(image, s)], s, "cpu")[0]


def to_long_side(image: np.ndarray, s: int) -> np.ndarray:
    """The image resized to the long side s as the service resizes it (as it is if already so)."""
    return image if max(image.shape[:2]) == s else resize_longest_side(image, s)


def step_data(seed: int, step: int, n: int, scene_size: int, s: int, mix: dict):
    """One training step's data, a pure function of (seed, step): the step's random generator
    after drawing its n scenes (the prompts draw on from it), the scenes, and their images resized
    to the input's long side `s` as the service resizes them (uint8, unpadded)."""
    rng = np.random.default_rng([seed, step])
    scenes = [make_scene(rng, *random_size(rng, scene_size), **mix) for _ in range(n)]
    return rng, scenes, [to_long_side(sc.image, s) for sc in scenes]


WORKER_STEP_TIMEOUT_S = 600  # a worker that died never answers: fail instead of waiting forever


def data_stream(make, first: int, steps: int, workers: int):
    """make(step) for step in [first, steps), in order: inline, or computed ahead by `workers`
    processes (at most two steps each in flight, so memory stays bounded); the same values either
    way. Close the generator to stop the workers.

    The workers are forked from a fresh single-threaded server process ("forkserver"), not from
    this one: a fork of a process with threads (gRPC's, PyTorch's, a gateway's) can leave the
    child holding a lock no thread will release, or crash it."""
    if not workers:
        for step in range(first, steps):
            yield make(step)
        return
    with multiprocessing.get_context("forkserver").Pool(workers) as pool:
        pending: deque = deque()
        ahead = first
        while pending or ahead < steps:
            while ahead < steps and len(pending) < 2 * workers:
                pending.append(pool.apply_async(make, (ahead,)))
                ahead += 1
            try:
                yield pending.popleft().get(timeout=WORKER_STEP_TIMEOUT_S)
            except multiprocessing.TimeoutError:
                raise RuntimeError(
                    f"a data worker gave no step within {WORKER_STEP_TIMEOUT_S} s (did it die?)"
                ) from None


def batch_input(images: list[np.ndarray], s: int, device) -> torch.Tensor:
    """Resized (h, w, 3) uint8 images -> (B, 3, s, s) on `device`: normalised and zero-padded as
    Sam.preprocess does, the arithmetic on the device (only uint8 crosses to it)."""
    mean = torch.tensor(MEAN, device=device)[:, None, None]
    std = torch.tensor(STD, device=device)[:, None, None]
    x = torch.zeros((len(images), 3, s, s), device=device)
    for i, im in enumerate(images):
        h, w = im.shape[:2]
        t = torch.tensor(im, device=device).permute(2, 0, 1).float()  # a copy: PIL arrays are read-only
        x[i, :, :h, :w] = (t - mean) / std
    return x


def focal_loss(logits: torch.Tensor, gt: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """(..., H, W) -> (...) mean sigmoid focal loss."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, gt, reduction="none")
    p_t = p * gt + (1 - p) * (1 - gt)
    loss = ce * (1 - p_t) ** gamma * (alpha * gt + (1 - alpha) * (1 - gt))
    return loss.flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(-2)
    g = gt.flatten(-2)
    return 1 - (2 * (p * g).sum(-1) + 1) / (p.sum(-1) + g.sum(-1) + 1)


def mask_iou(logits: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    pred = logits > 0
    g = gt > 0.5
    inter = (pred & g).flatten(-2).sum(-1).float()
    union = (pred | g).flatten(-2).sum(-1).float()
    return inter / union.clamp(min=1)


def sample_point(rng: np.random.Generator, region: np.ndarray) -> tuple[float, float] | None:
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        return None
    i = int(rng.integers(0, len(xs)))
    return float(xs[i]), float(ys[i])


def center_point(mask: np.ndarray) -> tuple[float, float]:
    """The inside point farthest from the boundary (the usual single-click protocol: the SAM
    paper's first click when it evaluates)."""
    dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x), float(y)


def exact_box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)


def first_prompt_share(rng: np.random.Generator, share: float | None) -> bool:
    """True with probability `share`; draws nothing when it is unset or 0, so runs written
    before the option existed keep their random stream."""
    return bool(share) and bool(rng.random() < share)


def noisy_box(rng: np.random.Generator, mask: np.ndarray, input_size: int) -> np.ndarray:
    """The SAM paper's box noise: std 10% of the side, at most 20 px in its 1024-px input frame
    (so at most 20 * input_size / 1024 px here)."""
    box = exact_box(mask)
    w, h = box[2] - box[0], box[3] - box[1]
    noise = rng.normal(0, 1, 4) * np.array([w, h, w, h]) * 0.1
    limit = 20 * input_size / 1024
    box = box + np.clip(noise, -limit, limit)
    hh, ww = mask.shape
    box[[0, 2]] = np.clip(box[[0, 2]], 0, ww - 1)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, hh - 1)
    return np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])


def prompt_losses(
    sam,
    emb,
    gt_np,
    rng,
    use_box: bool,
    iterations: int,
    focal_weight: float = 1.0,
    iou_weight: float = 1.0,
    scene_size: int | None = None,
    center_share: float | None = None,
    exact_box_share: float | None = None,
):
    """Loss of one image's K instances over `iterations` rounds of prompting. Masks, points and
    boxes live in the scene's frame (long side `scene_size`, default the model's input size);
    prompts reach the model scaled to its input frame, and its masks are compared at the scene's.
    The first point is drawn uniformly from the mask (the paper), or with probability
    `center_share` is its centre point (where users click); a box is noisy (the paper), or with
    probability `exact_box_share` the mask's exact box (what a user or a detector draws)."""
    s = scene_size or sam.image_encoder.img_size
    scale = sam.image_encoder.img_size / s
    k = len(gt_np)
    dev = emb.device
    gt = torch.from_numpy(np.pad(gt_np, ((0, 0), (0, s - gt_np.shape[1]), (0, s - gt_np.shape[2])))).float()
    gt = gt[:, None].to(dev)  # (K, 1, S, S)
    points = [[] for _ in range(k)]
    labels = [[] for _ in range(k)]
    boxes = None
    if use_box:
        drawn = [exact_box(m) if first_prompt_share(rng, exact_box_share) else noisy_box(rng, m, s) for m in gt_np]
        boxes = torch.tensor(np.stack(drawn) * scale, dtype=torch.float32, device=dev)
    else:
        for i, m in enumerate(gt_np):
            points[i].append(center_point(m) if first_prompt_share(rng, center_share) else sample_point(rng, m))
            labels[i].append(1)
    mask_input = None
    total = torch.zeros((), device=dev)
    image_pe = sam.prompt_encoder.get_dense_pe()
    for it in range(iterations):
        multimask = it == 0 and not use_box
        pts = None
        if points[0]:
            pts = (
                torch.tensor(points, dtype=torch.float32, device=dev) * scale,
                torch.tensor(labels, dtype=torch.int64, device=dev),
            )
        sparse, dense = sam.prompt_encoder(points=pts, boxes=boxes, masks=mask_input)
        low, iou_pred = sam.mask_decoder(emb, image_pe, sparse, dense, multimask_output=multimask)
        up = F.interpolate(low, (s, s), mode="bilinear", align_corners=False)  # (K, C, S, S)
        target = gt.expand_as(up)
        mask_loss = focal_weight * focal_loss(up, target) + dice_loss(up, target)  # (K, C)
        best = mask_loss.argmin(dim=1)
        chosen = mask_loss.gather(1, best[:, None])[:, 0]
        true_iou = mask_iou(up.detach(), target)
        total = total + chosen.mean() + iou_weight * F.mse_loss(iou_pred, true_iou)
        if it + 1 == iterations:
            break
        idx = torch.arange(k, device=dev)
        mask_input = low[idx, best][:, None].detach()
        pred = (up[idx, best] > 0).cpu().numpy()
        for i in range(k):
            fn = gt_np[i] & ~pred[i, : gt_np.shape[1], : gt_np.shape[2]]
            fp = pred[i, : gt_np.shape[1], : gt_np.shape[2]] & ~gt_np[i]
            region, label = (fn, 1) if fn.sum() >= fp.sum() else (fp, 0)
            p = sample_point(rng, region) or sample_point(rng, gt_np[i])
            points[i].append(p)
            labels[i].append(label if region.any() else 1)
    return total / iterations


def lr_at(step: int, steps: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def click_and_box_ious(predictor, mask: np.ndarray, point: tuple[float, float]) -> tuple[float, float, float]:
    """SAM's single-click and box protocol on an image set in `predictor`, IoUs against `mask`:
    (the best-scored of the point's three masks, the best of the three, the exact box's mask)."""
    masks, scores, _ = predictor.predict(np.array([point]), np.array([1]))
    (box,), _, _ = predictor.predict(box=exact_box(mask), multimask_output=False)
    *ious, box_iou = (float((pm & mask).sum() / max(1, (pm | mask).sum())) for pm in (*masks, box))
    return ious[int(np.argmax(scores))], max(ious), box_iou


@torch.no_grad()
def evaluate(sam, seed: int, n_images: int = 60, scene_size: int | None = None) -> dict:
    """Held-out scenes (a seed training never used): one positive point, or the exact box."""
    from segment_anything import SamPredictor

    sam.eval()
    predictor = SamPredictor(sam)
    rng = np.random.default_rng(seed)
    point_ious, box_ious = [], []
    for _ in range(n_images):
        h, w = random_size(rng, scene_size or sam.image_encoder.img_size)
        scene = make_scene(rng, h, w)
        predictor.set_image(scene.image)
        for m in scene.masks:
            if m.sum() < 200:
                continue
            point, _, box = click_and_box_ious(predictor, m, sample_point(rng, m))
            point_ious.append(point)
            box_ious.append(box)
    pi, bi = np.array(point_ious), np.array(box_ious)
    return {
        "instances": len(pi),
        "point_mean_iou": float(pi.mean()),
        "point_frac_iou_ge_0.8": float((pi >= 0.8).mean()),
        "box_mean_iou": float(bi.mean()),
        "box_frac_iou_ge_0.85": float((bi >= 0.85).mean()),
    }


def initial_model(init: Path | None, seed: int):
    """(model in train mode, its architecture): ARCH drawn from `seed`, or `init` loaded the way
    the service loads it, in its own shape (a wider encoder made by training.widen trains on as it is)."""
    if init is None:
        return build_small_sam(**ARCH, seed=seed).sam.train(), ARCH
    sam = load_checkpoint(init, "small").sam.train()
    return sam, small_architecture(sam.state_dict())


def freeze_except(sam, prefixes: list[str] | None) -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs left trainable: all of them, or only those whose names start
    with one of `prefixes` (the rest stop requiring gradients, so no graph is built through them)."""
    if prefixes:
        for name, param in sam.named_parameters():
            param.requires_grad_(name.startswith(tuple(prefixes)))
    trainable = [(n, p) for n, p in sam.named_parameters() if p.requires_grad]
    if not trainable:
        raise SystemExit(f"--train-only {' '.join(prefixes or [])}: no parameter name starts with that")
    return trainable


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=9000)
    p.add_argument("--minutes", type=float, default=0, help="stop after this long (0: run all steps)")
    p.add_argument("--images-per-step", type=int, default=2)
    p.add_argument("--instances-per-image", type=int, default=4)
    p.add_argument("--iterations", type=int, default=3, help="prompting rounds per instance")
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument(
        "--focal-weight",
        type=float,
        default=1.0,
        help="focal : dice weight (the SAM paper: 20; from scratch and short, 20 collapses to all-background)",
    )
    p.add_argument(
        "--iou-weight",
        type=float,
        default=1.0,
        help="weight of the IoU head's MSE (it ranks the three masks of a single point; the paper: 1)",
    )
    p.add_argument(
        "--scene-size",
        type=int,
        default=None,
        help="long side of the synthetic scenes (default: the model's input size; smaller: scenes are "
        "upscaled to the input as the service resizes images, and losses are taken at the scene's size)",
    )
    p.add_argument(
        "--center-share",
        type=float,
        default=None,
        help="share of single-point prompts whose first point is the mask's centre point (farthest from "
        "its boundary, where users click) rather than drawn uniformly from it as the paper does (default 0)",
    )
    p.add_argument(
        "--exact-box-share",
        type=float,
        default=None,
        help="share of box prompts given as the mask's exact box rather than with the paper's noise (default 0)",
    )
    p.add_argument(
        "--max-shapes",
        type=int,
        default=None,
        help="scenes have 1 to this many shapes (default 6); more: more occluded, fragmented shapes",
    )
    p.add_argument(
        "--outline-share",
        type=float,
        default=None,
        help="share of circles, ellipses and polygons drawn as outlines, not filled (default 0.25)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from this checkpoint's weights and shape (a second stage with fresh data: pass another --seed)",
    )
    p.add_argument(
        "--train-only",
        nargs="+",
        default=None,
        metavar="PREFIX",
        help="train only the parameters whose state_dict names start with these (e.g. "
        "mask_decoder.iou_prediction_head: re-fit the IoU head that ranks a point's three masks, "
        "masks untouched); the rest are frozen",
    )
    p.add_argument("--eval-seed", type=int, default=1_000_003)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device to train on (e.g. cuda); the data and prompts are drawn the same way on any",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that make the scenes ahead of the training loop (0: inline); the same scenes either way",
    )
    p.add_argument(
        "--resume-every",
        type=float,
        default=5.0,
        help="minutes between resume snapshots (<out>.resume.pt); a rerun of the same command continues from it",
    )
    return p


def _optimizer(trainable: list[tuple[str, torch.nn.Parameter]], lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on biases, norms, embeddings' scalars)."""
    decay = [p for n, p in trainable if p.ndim > 1]
    no_decay = [p for n, p in trainable if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def _resume(path: Path, sam, opt, args) -> tuple[int, float | None, float]:
    """(first step, smoothed loss, minutes already spent): from the run's snapshot when one exists."""
    if not path.exists():
        return 0, None, 0.0
    snap = torch.load(path, map_location=args.device, weights_only=False)
    if snap["args"] != _resume_key(args):
        raise SystemExit(f"{path} was written by a different command; delete it to start over")
    sam.load_state_dict(snap["model"])
    opt.load_state_dict(snap["optimizer"])
    print(f"resuming from {path} at step {snap['next_step']} ({snap['minutes']:.1f} min already spent)")
    return snap["next_step"], snap["smooth"], snap["minutes"]


def _step_loss(sam, rng, scenes, resized, s: int, scene_size: int, args) -> torch.Tensor:
    """One step's loss: the images encoded together, then each image's prompting rounds."""
    emb = sam.image_encoder(batch_input(resized, s, args.device))
    loss = torch.zeros((), device=args.device)
    for b, sc in enumerate(scenes):
        k = min(args.instances_per_image, len(sc.masks))
        chosen = rng.choice(len(sc.masks), size=k, replace=False)
        loss = loss + prompt_losses(
            sam,
            emb[b : b + 1],
            sc.masks[chosen],
            rng,
            bool(rng.random() < 0.5),
            args.iterations,
            args.focal_weight,
            args.iou_weight,
            scene_size,
            args.center_share,
            args.exact_box_share,
        )
    return loss / len(scenes)


def main() -> None:
    args = _parser().parse_args()
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    sam, arch = initial_model(args.init, args.seed)
    sam.to(args.device)
    s = sam.image_encoder.img_size
    scene_size = args.scene_size or s
    mix = {k: v for k, v in (("max_shapes", args.max_shapes), ("outline_share", args.outline_share)) if v is not None}
    opt = _optimizer(freeze_except(sam, args.train_only), args.lr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    resume_path = args.out.with_suffix(".resume.pt")
    first, smooth, spent = _resume(resume_path, sam, opt, args)
    started = time.monotonic() - spent * 60
    last_snap = time.monotonic()
    bar = tqdm(
        range(first, args.steps), initial=first, total=args.steps, desc="training", unit="step", dynamic_ncols=True
    )
    make = partial(step_data, args.seed, n=args.images_per_step, scene_size=scene_size, s=s, mix=mix)
    stream = data_stream(make, first, args.steps, args.workers)
    step = first - 1  # the last step run, if the loop runs none
    for step in bar:
        rng, scenes, resized = next(stream)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup=min(300, args.steps // 10 + 1))
        loss = _step_loss(sam, rng, scenes, resized, s, scene_size, args)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)  # frozen parameters have no grad: skipped
        opt.step()
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        bar.set_postfix(loss=f"{smooth:.4f}")
        if args.resume_every and time.monotonic() - last_snap > args.resume_every * 60:
            _snapshot(resume_path, sam, opt, step + 1, smooth, (time.monotonic() - started) / 60, args)
            last_snap = time.monotonic()
        if args.minutes and time.monotonic() - started > args.minutes * 60:
            break
    stream.close()
    minutes = (time.monotonic() - started) / 60
    metrics = evaluate(sam, args.eval_seed, scene_size=scene_size)
    save_small_checkpoint(sam.state_dict(), args.out)
    facts = {
        "architecture": arch,
        "steps": step + 1,
        "minutes": round(minutes, 1),
        "final_loss_smoothed": smooth,
        "args": {k: str(v) for k, v in vars(args).items()},
        "held_out": metrics,
    }
    args.out.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")
    resume_path.unlink(missing_ok=True)
    print(json.dumps(facts, indent=2))


def _resume_key(args) -> dict:
    """The arguments that must match for a snapshot to continue the same run (unset options are
    left out, so a snapshot written before an option existed still resumes)."""
    skip = ("minutes", "threads", "resume_every", "device", "workers")
    return {k: str(v) for k, v in vars(args).items() if k not in skip and v is not None}


def _snapshot(path: Path, sam, opt, next_step: int, smooth, minutes: float, args) -> None:
    """Write atomically, so a machine shut down mid-write leaves the previous snapshot intact."""
    tmp = path.with_suffix(".tmp")
    state = {"model": sam.state_dict(), "optimizer": opt.state_dict(), "next_step": next_step}
    torch.save({**state, "smooth": smooth, "minutes": minutes, "args": _resume_key(args)}, tmp)
    tmp.replace(path)


if __name__ == "__main__":
    main()
