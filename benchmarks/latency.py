"""Single-request latencies of the served stack, measured side by side in one run.

    .venv/bin/python benchmarks/latency.py                 # small demo model (S=256)
    .venv/bin/python benchmarks/latency.py --model vit_b   # ViT-B architecture, random weights (S=1024)

Starts its own redis-server, tritonserver (CPU repository) and gateway; prints median / p90
per operation and ratios against a cache-hit Segment and a bare decoder call to Triton.
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
from samserve.contract import MODEL_TYPES  # noqa: E402


def timed(fn, repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODEL_TYPES, default="small")
    p.add_argument("--repeats", type=int, default=20, help="per operation (encoder misses: a quarter of it)")
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    args = p.parse_args()

    import tritonclient.grpc as tc

    from samserve.client import PromptSpec, SamClient
    from samserve.devtools.sample_images import png_image

    loaded = load_model(args.model)
    with local_stack(loaded) as stack:
        gw, triton = stack.gateways[0], stack.triton
        client = SamClient(gw.target, timeout_s=600)
        h, w = args.height, args.width
        prompt = [PromptSpec(points=[(w * 0.4, h * 0.5)], labels=[1])]
        hit_image = png_image(h, w, 1)
        emb = client.embed(hit_image, return_embedding=True)
        embedding = np.frombuffer(emb.embedding.data, dtype="<f2").reshape(tuple(emb.embedding.shape))
        client.segment(hit_image, prompt)  # warm the decoder
        misses = max(2, args.repeats // 4)
        miss_images = [png_image(h, w, 100 + i) for i in range(misses)]
        seg_miss_images = [png_image(h, w, 200 + i) for i in range(misses)]

        triton_client = tc.InferenceServerClient(triton.grpc_url)
        e = loaded.img_size // 16

        def bare_decoder(_):
            feed = {
                "image_embeddings": embedding,
                "point_coords": np.array([[[[400.0, 380.0], [0.0, 0.0]]]], np.float32),
                "point_labels": np.array([[[1.0, -1.0]]], np.float32),
                "mask_input": np.zeros((1, 1, 1, 4 * e, 4 * e), np.float32),
                "has_mask_input": np.zeros((1, 1), np.float32),
            }
            inputs = []
            for name, arr in feed.items():
                i = tc.InferInput(name, list(arr.shape), "FP16" if arr.dtype == np.float16 else "FP32")
                i.set_data_from_numpy(arr)
                inputs.append(i)
            triton_client.infer("sam_decoder", inputs)

        from samserve.v1 import samserve_pb2 as pb

        # raw stub calls: the service's time, not the client library's mask decoding
        point = pb.Prompt(points=[pb.Point(x=w * 0.4, y=h * 0.5, label=1)])

        def segment(image: bytes | None = None, image_id: str | None = None):
            req = pb.SegmentRequest(prompts=[point])
            if image is not None:
                req.image = image
            else:
                req.image_id = image_id
            return client.stub.Segment(req, timeout=600)

        rows = {
            "Embed (miss: decode+preprocess+encoder+store)": timed(lambda i: client.embed(miss_images[i]), misses),
            "Segment (miss: + decoder + masks)": timed(lambda i: segment(seg_miss_images[i]), misses),
            "Embed (hit)": timed(lambda i: client.embed(hit_image), args.repeats),
            "Segment (hit, image bytes, 1 point, 3 masks)": timed(lambda i: segment(hit_image), args.repeats),
            "Segment (hit, image_id)": timed(lambda i: segment(image_id=emb.image_id), args.repeats),
            "bare sam_decoder call to Triton (1 prompt)": timed(bare_decoder, args.repeats),
        }
        seg_hit = statistics.median(rows["Segment (hit, image bytes, 1 point, 3 masks)"])
        bare = statistics.median(rows["bare sam_decoder call to Triton (1 prompt)"])
        print(
            f"\nmodel {args.model} (S={loaded.img_size}), image {w}x{h}, {args.repeats} repeats "
            f"({misses} for misses); one client, sequential"
        )
        print(f"{'operation':50s} {'median ms':>10s} {'p90 ms':>9s} {'/ seg hit':>10s} {'/ bare dec':>11s}")
        for name, times in rows.items():
            med = statistics.median(times)
            p90 = float(np.percentile(times, 90))
            print(f"{name:50s} {med * 1e3:10.1f} {p90 * 1e3:9.1f} {med / seg_hit:10.2f} {med / bare:11.2f}")
        client.close()


if __name__ == "__main__":
    main()
