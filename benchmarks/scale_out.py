"""Two gateway replicas sharing one Redis and one Triton, on one machine: an image embedded
through replica A is a cache hit through replica B, and concurrent first requests for one
image through both run the encoder once (Triton's statistics count it).

    .venv/bin/python benchmarks/scale_out.py [--model small|vit_b] [--images 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["small", "vit_b"], default="small")
    p.add_argument("--images", type=int, default=5)
    args = p.parse_args()

    import tritonclient.grpc as tc

    from build_engines.repository import write_cpu_repository
    from samserve.client import PromptSpec, SamClient
    from samserve.embedded import start_redis, start_triton
    from tests.support.images import png_image
    from tests.support.stack import GatewayThread, gateway_settings

    work = Path(tempfile.mkdtemp(prefix="samserve-scale-"))
    loaded = load_model(args.model)
    repo = write_cpu_repository(loaded, work / "repo")
    redis = start_redis()
    triton = start_triton(repo, work / "triton.log", work)
    a = GatewayThread(gateway_settings(triton.grpc_url, redis.url))
    b = GatewayThread(gateway_settings(triton.grpc_url, redis.url))
    stats = tc.InferenceServerClient(triton.grpc_url)

    def encoder_runs() -> int:
        return int(stats.get_inference_statistics("sam_encoder").model_stats[0].inference_count)

    prompt = [PromptSpec(points=[(100, 100)], labels=[1])]
    try:
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
    finally:
        a.stop()
        b.stop()
        triton.stop()
        redis.stop()


if __name__ == "__main__":
    main()
