"""Bulk embedding: images/s through EmbedMany against single Embeds, sequential and
concurrent, side by side in one run on one stack (every image new to the cache each time).

    .venv/bin/python benchmarks/embed_many.py                     # the test model (S=256), 32 images
    .venv/bin/python benchmarks/embed_many.py --model vit_t --images 16

Prints images/s per way and EmbedMany's ratio to the best of the others, and the encoder's
images per execution (Triton statistics) for each way.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402


def encoder_counts(url: str) -> tuple[int, int]:
    import tritonclient.grpc as tc

    s = tc.InferenceServerClient(url).get_inference_statistics(model_name="sam_encoder").model_stats[0]
    return int(s.inference_count), int(s.execution_count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    from samserve.client import SamClient
    from samserve.devtools.sample_images import png_image

    loaded = load_model(args.model)
    seed = iter(range(10_000, 1_000_000))
    with local_stack(loaded) as stack, SamClient(stack.gateways[0].target, timeout_s=None) as client:
        client.embed(png_image(480, 640, 1))  # warm

        def batch() -> list[bytes]:
            return [png_image(480, 640, next(seed)) for _ in range(args.images)]

        def sequential(images):
            for data in images:
                client.embed(data)

        def concurrent(images):
            with ThreadPoolExecutor(args.concurrency) as pool:
                list(pool.map(client.embed, images))

        def embed_many(images):
            results = list(client.embed_many(images, window=args.concurrency))
            assert all(r.status == "OK" for r in results), results

        rows = []
        for name, fn in (
            ("Embed, one at a time", sequential),
            (f"Embed, {args.concurrency} threads", concurrent),
            (f"EmbedMany, window {args.concurrency}", embed_many),
        ):
            images = batch()
            before = encoder_counts(stack.triton.grpc_url)
            t = time.perf_counter()
            fn(images)
            seconds = time.perf_counter() - t
            after = encoder_counts(stack.triton.grpc_url)
            per_exec = (after[0] - before[0]) / max(after[1] - before[1], 1)
            rows.append((name, len(images) / seconds, per_exec))
    best_other = max(r[1] for r in rows[:2])
    print(f"{args.model}, {args.images} new 640x480 images each way, the same stack")
    print(f"{'way':28s} {'images/s':>9s} {'images per encoder execution':>30s}")
    for name, rate, per_exec in rows:
        print(f"{name:28s} {rate:9.2f} {per_exec:30.2f}")
    print(f"EmbedMany / best of the single Embeds: {rows[2][1] / best_other:.2f}x")


if __name__ == "__main__":
    main()
