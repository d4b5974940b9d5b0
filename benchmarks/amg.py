"""Served automatic mask generation (gateway -> Triton sam_amg_generate) vs the reference
SamAutomaticMaskGenerator in-process: same weights, same images, same options, same CPU,
measured alternately in one run.

    .venv/bin/python benchmarks/amg.py [--model shipped|small|vit_b] [--images 3] [--precision bf16]
    .venv/bin/python benchmarks/amg.py --model shipped --configs defaults   # the reference's defaults

shipped: the embedded shapes model (models/sam_small_shapes.pth), on synthetic shape scenes.

Options sets: "16x16" (16 points a side, no crops) and "8x8+crop1" (8 points a side, one crop
layer), each with the reference's default thresholds and with the low thresholds the
fidelity tests use on random weights (where the defaults filter out every mask).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402

LOW = {
    "pred_iou_thresh": 0.01,
    "stability_score_thresh": 0.25,
    "stability_score_offset": 0.02,
    "box_nms_thresh": 1.0,
    "crop_nms_thresh": 1.0,
}
CONFIGS = {
    "defaults (32x32, no crops)": {},
    "16x16, default thresholds": {"points_per_side": 16},
    "16x16, low thresholds": {"points_per_side": 16, **LOW},
    "8x8+crop1, default thresholds": {"points_per_side": 8, "crop_n_layers": 1},
    "8x8+crop1, low thresholds": {"points_per_side": 8, "crop_n_layers": 1, **LOW},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["shipped", "small", "vit_b"], default="small")
    p.add_argument("--configs", default="", help="comma-separated prefixes of the option sets to run (default all)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="what the served model computes in")
    p.add_argument("--images", type=int, default=3, help="images per configuration")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    args = p.parse_args()

    import torch
    from segment_anything import SamAutomaticMaskGenerator

    from samserve.client import SamClient
    from samserve.devtools.sample_images import encode, synthetic_image

    if args.model == "shipped":
        from build_engines.models import load_checkpoint

        loaded = load_checkpoint(ROOT / "models" / "sam_small_shapes.pth", "small")
    else:
        loaded = load_model(args.model)
    h, w = args.height, args.width
    configs = {k: v for k, v in CONFIGS.items() if not args.configs or k.startswith(tuple(args.configs.split(",")))}
    with (
        local_stack(loaded, precision=args.precision) as stack,
        SamClient(stack.gateways[0].target, timeout_s=3600) as client,
    ):
        import json

        import tritonclient.grpc as tc

        from benchmarks.embed_stages import triton_times
        from samserve.contract import DECODER

        served_as = json.loads((stack.repository / "build_info.json").read_text())["precision"]
        stats = tc.InferenceServerClient(stack.triton.grpc_url)
        gw = stack.gateways[0]
        decoder = gw.call(gw.gateway.engine.model()).triton(DECODER)
        warm = encode(synthetic_image(h, w, 999))
        client.generate_masks(warm, points_per_side=2)
        rows = []
        seed = 0
        for name, options in configs.items():
            ref_t, served_t, cached_t, decoder_t, counts = [], [], [], [], []
            for _ in range(args.images):
                seed += 1
                if args.model == "shipped":  # its domain: the held-out shape scenes
                    from training.held_out import scenes

                    image = next(scenes(1, offset=seed)).image
                else:
                    image = synthetic_image(h, w, seed)
                data = encode(image)
                t = time.perf_counter()
                try:
                    with torch.no_grad():
                        ref = SamAutomaticMaskGenerator(loaded.sam, output_mode="coco_rle", **options).generate(image)
                    n_ref = len(ref)
                except IndexError:
                    # the reference crashes in box_area when crop layers leave no mask at all
                    n_ref = "crash"
                ref_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                served = client.generate_masks_pb(data, **options)  # a new image: encoder included
                served_t.append(time.perf_counter() - t)
                before = triton_times(stats, decoder)["compute_infer"]
                t = time.perf_counter()
                client.generate_masks_pb(data, **options)  # now its embedding is cached
                cached_t.append(time.perf_counter() - t)
                decoder_t.append((triton_times(stats, decoder)["compute_infer"] - before) / 1e9)
                counts.append((n_ref, len(served.masks)))
            rows.append(
                (
                    name,
                    statistics.median(ref_t),
                    statistics.median(served_t),
                    statistics.median(cached_t),
                    statistics.median(decoder_t),
                    counts,
                )
            )
        print(
            f"\nmodel {args.model} (S={loaded.img_size}), asked {args.precision}, served {served_as}, image {w}x{h}, "
            f"{args.images} images per row, torch threads {torch.get_num_threads()}"
        )
        print(
            f"{'options':32s} {'reference s':>12s} {'served s':>9s} {'served/ref':>11s} {'cached s':>9s} "
            f"{'cached/ref':>11s} {'decoder s':>10s}  masks (ref, served)"
        )
        for name, r, s, c, d, counts in rows:
            print(f"{name:32s} {r:12.2f} {s:9.2f} {s / r:11.2f} {c:9.2f} {c / r:11.2f} {d:10.2f}  {counts}")
        print("decoder s: Triton's compute time of the decoder within a cached run (the rest is the generator's own)")


if __name__ == "__main__":
    main()
