"""Where a served click (Segment by image_id) spends its time, stage by stage, beside `predict`.

    .venv/bin/python benchmarks/click_stages.py                    # vit_t, fp32, 1 prompt
    .venv/bin/python benchmarks/click_stages.py --model vit_b --prompts 16

Serves the model (full-size architecture, random weights) on a local stack, embeds a noisy
1024x768 image and times the gateway's own stages of a Segment by image_id (3 masks per
prompt, COCO RLE): the decoder call over gRPC (and within it Triton's queue / input / compute /
output, from its statistics), the finishing (upsampling, threshold, RLE), then the whole RPC
through the SDK with every mask decoded, and, timed in turn with it, the reference's `predict`
on the same weights and image. Stages are timed by wrapping the engine's methods in the gateway
that serves the RPCs. Medians.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.embed_stages import triton_times  # noqa: E402
from benchmarks.stack import load_model, local_stack  # noqa: E402


def timed(rows: dict, name: str, fn):
    """An async method wrapped to note its time under `name`."""

    @functools.wraps(fn)
    async def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            rows.setdefault(name, []).append((time.perf_counter() - t) * 1e3)

    return wrapper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="vit_t")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--prompts", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--height", type=int, default=768)
    p.add_argument("--width", type=int, default=1024)
    args = p.parse_args()

    import torch
    import tritonclient.grpc as tc

    from benchmarks.families import clicks, predictor_for
    from samserve.client import PromptSpec, SamClient
    from samserve.client.sdk import segmentation_from_pb
    from samserve.contract import DECODER
    from samserve.devtools.sample_images import png_image, synthetic_image

    torch.set_num_threads(2)
    loaded = load_model(args.model)
    predictor = predictor_for(loaded)
    h, w = args.height, args.width
    points = clicks(h, w, args.prompts)
    prompts = [PromptSpec(points=[(float(x), float(y))], labels=[1]) for x, y in points]
    rows: dict[str, list[float]] = {}
    prefix = f"samserve-clicks-{args.model}-"
    with torch.no_grad(), local_stack(loaded, prefix=prefix, precision=args.precision) as stack:
        gw = stack.gateways[0]
        engine = gw.gateway.engine
        engine._decode = timed(rows, "decoder call over gRPC (all)", engine._decode)
        engine._finish = timed(rows, "finishing (upsample, threshold, RLE)", engine._finish)
        engine.segment = timed(rows, "engine.segment (all)", engine.segment)
        client = SamClient(gw.target, timeout_s=600)
        stats = tc.InferenceServerClient(stack.triton.grpc_url)
        model = gw.call(engine.model())
        image_id = client.embed(png_image(h, w, 400)).image_id
        predictor.set_image(synthetic_image(h, w, 400))
        for _ in range(3):  # warm both sides
            [m.masks for m in client.segment(image_id=image_id, prompts=prompts).prompts]
            [predictor.predict(q[None], np.array([1])) for q in points]
        rows.clear()
        for _ in range(args.repeats):
            time.sleep(0.2)
            before = triton_times(stats, model.triton(DECODER))
            t = time.perf_counter()
            reply = client.stub.Segment(client_request(client, image_id, prompts), timeout=600)
            rows.setdefault("Segment RPC (stub, masks as sent)", []).append((time.perf_counter() - t) * 1e3)
            after = triton_times(stats, model.triton(DECODER))
            for k in before:
                rows.setdefault(f"  of which Triton {k}", []).append((after[k] - before[k]) / 1e6)
            t = time.perf_counter()
            decoded = [m.masks for m in segmentation_from_pb(reply).prompts]
            assert len(decoded) == len(prompts)
            rows.setdefault("SDK: every mask decoded to arrays", []).append((time.perf_counter() - t) * 1e3)
            rows.setdefault("response bytes", []).append(reply.ByteSize() / 1e3)
            time.sleep(0.2)
            t = time.perf_counter()
            [predictor.predict(q[None], np.array([1])) for q in points]
            rows.setdefault("reference predict", []).append((time.perf_counter() - t) * 1e3)
        client.close()

    print(f"\n{args.model} {args.precision}, image {w}x{h}, {args.prompts} prompt(s), 3 masks each", end="")
    print(f"; medians of {args.repeats}")
    for name, values in rows.items():
        unit = "kB" if name == "response bytes" else "ms"
        print(f"{name:48s} {statistics.median(values):9.1f} {unit}")
    rpc = statistics.median(rows["Segment RPC (stub, masks as sent)"])
    ref = statistics.median(rows["reference predict"])
    rest = rpc - statistics.median(rows["engine.segment (all)"])
    print(f"{'RPC outside engine.segment (gRPC, protos)':48s} {rest:9.1f} ms")
    print(f"{'served RPC / predict':48s} {rpc / ref:9.2f}x")
    decoded = rpc + statistics.median(rows["SDK: every mask decoded to arrays"])
    print(f"{'served RPC + every mask decoded / predict':48s} {decoded / ref:9.2f}x")


def client_request(client, image_id: str, prompts):
    from samserve.v1 import samserve_pb2 as pb

    return pb.SegmentRequest(image_id=image_id, prompts=[p.to_pb() for p in prompts], multimask_output=True)


if __name__ == "__main__":
    main()
