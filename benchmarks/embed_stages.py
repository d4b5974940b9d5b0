"""Where a served Embed of a new image spends its time, stage by stage, beside the bare encoder.

    .venv/bin/python benchmarks/embed_stages.py                    # vit_t, fp32
    .venv/bin/python benchmarks/embed_stages.py --model sam2.1_hiera_t --precision bf16

Serves the model (full-size architecture, random weights) on a local stack and, for new
1024x768 PNGs, times in this process what the gateway does for an Embed miss, with the
gateway's own functions: decode, preprocess, the encoder call over gRPC (and within it
Triton's own queue / input / compute / output times, from its statistics), the conversion, and
the cache entry's encoding and Redis write (off the response's path since the gateway answers
before it writes: shown, not counted in the rest); then the whole Embed RPC through the SDK, and
the bare encoder (the repository's ONNX file on the served runtime, in this process). Medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402


def triton_times(client, model: str) -> dict[str, float]:
    """Triton's cumulative ns per stage of `model` so far."""
    s = client.get_inference_statistics(model_name=model).model_stats[0].inference_stats
    return {k: getattr(s, k).ns for k in ("queue", "compute_input", "compute_infer", "compute_output")}


async def _make(cls, url: str, shm):
    return cls(url, 600, shared_memory=shm is not None)  # as the gateway calls it


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_t")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    args = p.parse_args()

    import redis
    import tritonclient.grpc as tc

    from benchmarks.families import bare_encoder
    from samserve.client import SamClient
    from samserve.contract import ENCODER
    from samserve.core.embedding_codec import ImageEmbedding, encode_entry
    from samserve.core.image import decode_image
    from samserve.core.preprocess import preprocess_for
    from samserve.devtools.sample_images import png_image
    from samserve.gateway.backends.triton import TritonBackend

    loaded = load_model(args.model)
    h, w = args.height, args.width
    with local_stack(loaded, prefix=f"samserve-stages-{args.model}-", precision=args.precision) as stack:
        info = json.loads((stack.repository / "build_info.json").read_text())
        gw = stack.gateways[0]
        client = SamClient(gw.target, timeout_s=600)
        stats = tc.InferenceServerClient(stack.triton.grpc_url)
        cache = redis.Redis.from_url(stack.redis.url)
        model = gw.call(gw.gateway.engine.model())
        loop = asyncio.new_event_loop()  # the aio client lives on one loop
        backend = loop.run_until_complete(_make(TritonBackend, stack.triton.grpc_url, gw.gateway.engine.triton._shm))
        _, runtime, bare = bare_encoder(stack.repository, loaded, h, w)
        client.embed(png_image(h, w, 1))  # warm every path
        bare(0)
        rows: dict[str, list[float]] = {}

        def note(name: str, seconds: float) -> None:
            rows.setdefault(name, []).append(seconds * 1e3)

        for i in range(args.repeats):
            data = png_image(h, w, 100 + i)
            t = time.perf_counter()
            rgb = decode_image(data, 100_000_000, 1)
            note("decode (PIL)", time.perf_counter() - t)
            t = time.perf_counter()
            x, input_size = preprocess_for(model.family, rgb, model.img_size, model.pixel_mean, model.pixel_std)
            note("preprocess", time.perf_counter() - t)
            before = triton_times(stats, model.triton(ENCODER))
            time.sleep(0.2)
            t = time.perf_counter()
            emb, _ = loop.run_until_complete(backend.encode(model, x))
            note("encoder call over gRPC (all)", time.perf_counter() - t)
            after = triton_times(stats, model.triton(ENCODER))
            for k in before:
                note(f"  of which Triton {k}", (after[k] - before[k]) / 1e9)
            t = time.perf_counter()
            entry = ImageEmbedding(
                np.ascontiguousarray(emb, dtype=np.float16), rgb.shape[:2], input_size, model.model_id
            )
            value = encode_entry(entry)
            note("cache entry encoding (off the path)", time.perf_counter() - t)
            t = time.perf_counter()
            cache.set(f"bench:{i}", value, ex=60)
            note(f"Redis write ({len(value) >> 20} MiB, off the path)", time.perf_counter() - t)
            time.sleep(0.2)
            t = time.perf_counter()
            bare(i)
            note(f"bare encoder ({runtime})", time.perf_counter() - t)
            time.sleep(0.2)
            fresh = png_image(h, w, 500 + i)
            t = time.perf_counter()
            client.embed(fresh)
            note("served Embed RPC (SDK), new image", time.perf_counter() - t)
            t = time.perf_counter()
            client.embed(fresh)
            note("served Embed RPC (SDK), the same image again (hit)", time.perf_counter() - t)
        client.close()
        loop.run_until_complete(backend.close())  # its shared-memory regions

    print(
        f"\n{args.model}, asked {args.precision}, served {info['precision']}; image {w}x{h}; medians of {args.repeats}"
    )
    for name, values in rows.items():
        print(f"{name:48s} {statistics.median(values):9.1f} ms")
    served = statistics.median(rows["served Embed RPC (SDK), new image"])
    stages = ["decode (PIL)", "preprocess", "encoder call over gRPC (all)"]
    rest = served - sum(statistics.median(rows[k]) for k in stages)
    print(f"{'the rest (RPC, hashing, Redis reads, lock, hops)':48s} {rest:9.1f} ms")
    encoder = statistics.median(next(v for k, v in rows.items() if k.startswith("bare encoder")))
    print(f"{'served Embed / bare encoder':48s} {served / encoder:9.2f}x")


if __name__ == "__main__":
    main()
