"""Served vs the reference in-process, per model family, side by side in one run.

    .venv/bin/python benchmarks/families.py          # vit_t, sam2.1_hiera_t, sam2.1_hiera_s, vit_b
    .venv/bin/python benchmarks/families.py --models vit_t,sam2.1_hiera_t --repeats 5

For each model (full-size architecture, random weights, S = 1024) on the same CPU: the served
Embed of a new image (decode + preprocess + encoder + cache write) against the reference
predictor's set_image, and a served Segment by image_id (1 point, 3 masks, COCO RLE) against
the reference's predict on the same weights and image, and 16 prompts in one Segment against
16 predicts. Served and reference calls are timed in turn, in one process, while both are
loaded. Prints medians and served/reference ratios; the encoder milliseconds are what a CPU
user of the family pays per new image.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402


def predictor_for(loaded):
    if loaded.family == "sam2":
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor(loaded.sam)
    if loaded.model_type == "vit_t":
        from mobile_sam import SamPredictor
    else:
        from segment_anything import SamPredictor
    return SamPredictor(loaded.sam)


PROMPTS_MANY = 16


def clicks(h: int, w: int, n: int) -> np.ndarray:
    """n points spread over the image (a fixed grid), (n, 2) XY."""
    g = int(np.ceil(np.sqrt(n)))
    xs, ys = np.meshgrid((np.arange(g) + 0.5) / g * w, (np.arange(g) + 0.5) / g * h)
    return np.stack([xs.ravel(), ys.ravel()], 1)[:n].astype(np.float32)


def interleaved_ms(first, second, repeats: int) -> tuple[float, float]:
    """Medians of `first` and `second`, timed in turn (first, second, first, ...): a noisy
    machine's slow spells fall on both sides. A pause before each call lets the other side's
    threads (ONNX Runtime's spin after a run) go idle first."""
    a, b = [], []
    for i in range(repeats):
        for fn, out in ((first, a), (second, b)):
            time.sleep(0.2)
            t = time.perf_counter()
            fn(i)
            out.append(time.perf_counter() - t)
    return statistics.median(a) * 1e3, statistics.median(b) * 1e3


def measure(name: str, h: int, w: int, repeats: int) -> tuple[float, ...]:
    """(served Embed miss, reference set_image, served Segment hit, reference predict, served
    Segment of 16 prompts, 16 reference predicts), ms; served and reference timed in turn."""
    import torch

    from samserve.client import PromptSpec, SamClient
    from samserve.devtools.sample_images import png_image, synthetic_image
    from samserve.v1 import samserve_pb2 as pb

    loaded = load_model(name)
    predictor = predictor_for(loaded)
    point = np.array([[w * 0.4, h * 0.5]], np.float32)
    many = clicks(h, w, PROMPTS_MANY)
    with torch.no_grad(), local_stack(loaded, prefix=f"samserve-families-{name}-") as stack:
        client = SamClient(stack.gateways[0].target, timeout_s=600)
        encoded = [png_image(h, w, 400 + i) for i in range(repeats + 1)]
        decoded = [synthetic_image(h, w, 400 + i) for i in range(repeats + 1)]
        image_id = client.embed(encoded[-1]).image_id  # warm, and the image the clicks use
        client.segment(image_id=image_id, prompts=[PromptSpec(points=[tuple(point[0])], labels=[1])])
        predictor.set_image(decoded[-1])  # warm; the reference clicks on the same image
        served_embed, ref_embed = interleaved_ms(
            lambda i: client.embed(encoded[i]), lambda i: predictor.set_image(decoded[i]), repeats
        )
        predictor.set_image(decoded[-1])
        click = pb.Prompt(points=[pb.Point(x=w * 0.4, y=h * 0.5, label=1)])
        req = pb.SegmentRequest(image_id=image_id, prompts=[click])
        served_segment, ref_predict = interleaved_ms(
            lambda i: client.stub.Segment(req, timeout=600),
            lambda i: predictor.predict(point, np.array([1])),
            5 * repeats,
        )
        prompts = [pb.Prompt(points=[pb.Point(x=float(x), y=float(y), label=1)]) for x, y in many]
        req_many = pb.SegmentRequest(image_id=image_id, prompts=prompts)
        served_many, ref_many = interleaved_ms(
            lambda i: client.stub.Segment(req_many, timeout=600),
            lambda i: [predictor.predict(p[None], np.array([1])) for p in many],
            repeats,
        )
        client.close()
    return served_embed, ref_embed, served_segment, ref_predict, served_many, ref_many


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit_t,sam2.1_hiera_t,sam2.1_hiera_s,vit_b")
    p.add_argument("--repeats", type=int, default=3, help="per measurement (new images for the encoder)")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads of the reference")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    h, w = args.height, args.width
    rows = []
    for name in args.models.split(","):
        rows.append((name, *measure(name, h, w, args.repeats)))
        print(f"{name}: done", flush=True)

    print(f"\nimage {w}x{h}, S=1024, random weights, {args.repeats} new images, {5 * args.repeats} clicks; medians")
    print(
        f"{'model':15s} {'Embed miss ms':>14s} {'set_image ms':>13s} {'ratio':>6s} "
        f"{'Segment hit ms':>15s} {'predict ms':>11s} {'ratio':>6s} "
        f"{'16 prompts ms':>14s} {'16 predicts ms':>15s} {'ratio':>6s}"
    )
    for name, se, re_, ss, rp, sm, rm in rows:
        print(
            f"{name:15s} {se:14.0f} {re_:13.0f} {se / re_:6.2f} {ss:15.1f} {rp:11.1f} {ss / rp:6.2f} "
            f"{sm:14.0f} {rm:15.0f} {sm / rm:6.2f}"
        )


if __name__ == "__main__":
    main()
