"""Two gateway replicas sharing one Redis and one Triton, on one machine: an image embedded
through replica A is a cache hit through replica B, and concurrent first requests for one
image through both run the encoder once (Triton's statistics count it).

    .venv/bin/python benchmarks/scale_out.py [--model small|vit_b] [--images 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["small", "vit_b"], default="small")
    p.add_argument("--images", type=int, default=5)
    args = p.parse_args()

    import tritonclient.grpc as tc

    from samserve.client import PromptSpec, SamClient
    from samserve.devtools.sample_images import png_image

    loaded = load_model(args.model)
    prompt = [PromptSpec(points=[(100, 100)], labels=[1])]
    with local_stack(loaded, gateways=2) as stack:
        a, b = stack.gateways
        stats = tc.InferenceServerClient(stack.triton.grpc_url)

        def encoder_runs() -> int:
            return int(stats.get_inference_statistics("sam_encoder").model_stats[0].inference_count)

        with SamClient(a.target, timeout_s=600) as ca, SamClient(b.target, timeout_s=600) as cb:
            ca.segment(png_image(300, 400, 1), prompt)  # warm-up
            miss_a, hit_b = [], []
            for i in range(args.images):
                data = png_image(768, 1024, 100 + i)
                t = time.perf_counter()
                assert not ca.segment(data, prompt).cached
                miss_a.append(time.perf_counter() - t)
                t = time.perf_counter()
                assert cb.segment(data, prompt).cached
                hit_b.append(time.perf_counter() - t)
            before = encoder_runs()
            concurrent_images = [png_image(768, 1024, 200 + i) for i in range(args.images)]
            cached_flags = []

            def go(client, data):
                cached_flags.append(client.segment(data, prompt).cached)

            t = time.perf_counter()
            for data in concurrent_images:
                threads = [threading.Thread(target=go, args=(c, data)) for c in (ca, cb, ca, cb)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
            both = time.perf_counter() - t
            runs = encoder_runs() - before
        print(f"\nmodel {args.model} (S={loaded.img_size}), 1024x768 images, two gateways, one Redis, one Triton")
        print(f"Segment through A (miss): median {statistics.median(miss_a) * 1e3:.1f} ms")
        print(
            f"Segment through B (hit, embedded through A): median {statistics.median(hit_b) * 1e3:.1f} ms "
            f"({statistics.median(miss_a) / statistics.median(hit_b):.1f}x faster)"
        )
        print(
            f"{len(concurrent_images)} new images, 4 concurrent first requests each (2 per replica): "
            f"{runs} encoder runs for {4 * len(concurrent_images)} requests, "
            f"{cached_flags.count(False)} of them ran it, {both:.1f} s"
        )


if __name__ == "__main__":
    main()
