"""Served vs the reference in-process, per model family, side by side in one run.

    .venv/bin/python benchmarks/families.py          # vit_t, sam2.1_hiera_t, sam2.1_hiera_s, vit_b
    .venv/bin/python benchmarks/families.py --models vit_t,sam2.1_hiera_t --repeats 5
    .venv/bin/python benchmarks/families.py --precision bf16   # OpenVINO bf16, where the gate passes

For each model (full-size architecture, random weights, S = 1024) on the same CPU: the served
Embed of a new image (decode + preprocess + encoder + cache write) against the reference
predictor's set_image, and a served Segment by image_id (1 point, 3 masks, COCO RLE) against
the reference's predict on the same weights and image, and 16 prompts in one Segment against
16 predicts. Served and reference calls are timed in turn, in one process, while both are
loaded. Also the bare encoder (the repository's ONNX file on the served runtime, in this process,
on an already preprocessed input) against the served Embed: what the service adds to the model.
Prints medians and ratios, and the precision and runtime actually served (a model asked for in
bf16 that fails the accuracy gate is served in fp32); the encoder milliseconds are what a CPU
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


def bare_encoder(repo: Path, loaded, h: int, w: int):
    """(precision served, runtime, fn(i) running the repository's encoder in this process on a
    preprocessed new image): the model's own time, without the service."""
    import json

    from build_engines.repository import normalisation
    from samserve.contract import OPENVINO
    from samserve.core.preprocess import preprocess_for
    from samserve.devtools.sample_images import synthetic_image
    from samserve.triton.cpu_runtime import CpuSession

    precision = json.loads((repo / "build_info.json").read_text())["precision"]
    session = CpuSession(str(repo / "sam_encoder" / "1" / "model.onnx"), precision, OPENVINO)
    mean, std, _ = normalisation(loaded)
    images = [synthetic_image(h, w, 900 + i) for i in range(8)]
    inputs = [preprocess_for(loaded.family, im, loaded.img_size, mean, std)[0] for im in images]
    return precision, session.runtime, lambda i: session.run(["image_embeddings"], {"images": inputs[i % 8]})


def measure(name: str, h: int, w: int, repeats: int, precision: str = "fp32") -> tuple:
    """(served Embed miss, reference set_image, served Segment hit, reference predict, served
    Segment of 16 prompts, 16 reference predicts, bare encoder, served Embed beside it, the
    precision and runtime served), ms; served and reference timed in turn."""
    import torch

    from samserve.client import PromptSpec, SamClient
    from samserve.devtools.sample_images import png_image, synthetic_image
    from samserve.v1 import samserve_pb2 as pb

    loaded = load_model(name)
    predictor = predictor_for(loaded)
    point = np.array([[w * 0.4, h * 0.5]], np.float32)
    many = clicks(h, w, PROMPTS_MANY)
    with torch.no_grad(), local_stack(loaded, prefix=f"samserve-families-{name}-", precision=precision) as stack:
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
        served_precision, runtime, bare = bare_encoder(stack.repository, loaded, h, w)
        bare(0)  # warm
        fresh = [png_image(h, w, 700 + i) for i in range(repeats)]
        served_again, bare_ms = interleaved_ms(lambda i: client.embed(fresh[i]), bare, repeats)
        client.close()
    return (
        served_embed, ref_embed, served_segment, ref_predict, served_many, ref_many,
        bare_ms, served_again, served_precision, runtime,
    )  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="vit_t,sam2.1_hiera_t,sam2.1_hiera_s,vit_b")
    p.add_argument("--repeats", type=int, default=3, help="per measurement (new images for the encoder)")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2, help="PyTorch threads of the reference")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="what the served models compute in")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    h, w = args.height, args.width
    rows = []
    for name in args.models.split(","):
        rows.append((name, *measure(name, h, w, args.repeats, args.precision)))
        print(f"{name}: done", flush=True)

    print(f"\nimage {w}x{h}, S=1024, random weights, {args.repeats} new images, {5 * args.repeats} clicks; medians")
    print(f"asked for {args.precision}; served:")
    for name, *_, served_precision, runtime in rows:
        print(f"  {name}: {served_precision}, encoder run by {runtime}")
    print(
        f"{'model':15s} {'Embed miss ms':>14s} {'set_image ms':>13s} {'ratio':>6s} "
        f"{'Segment hit ms':>15s} {'predict ms':>11s} {'ratio':>6s} "
        f"{'16 prompts ms':>14s} {'16 predicts ms':>15s} {'ratio':>6s} "
        f"{'bare encoder ms':>16s} {'Embed ms':>9s} {'ratio':>6s}"
    )
    for name, se, re_, ss, rp, sm, rm, bare, again, *_ in rows:
        print(
            f"{name:15s} {se:14.0f} {re_:13.0f} {se / re_:6.2f} {ss:15.1f} {rp:11.1f} {ss / rp:6.2f} "
            f"{sm:14.0f} {rm:15.0f} {sm / rm:6.2f} {bare:16.0f} {again:9.0f} {again / bare:6.2f}"
        )


if __name__ == "__main__":
    main()
