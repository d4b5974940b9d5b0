"""Decoder throughput with Triton's dynamic batching vs without, at 1 and 8 concurrent
clients, measured side by side in one run on the same machine.

    .venv/bin/python benchmarks/batching.py [--model small|vit_b] [--seconds 8] [--prompts 1]

Two Triton servers serve the same model repository; the second has `dynamic_batching`
removed from sam_decoder. Clients call sam_decoder directly (one image embedding and
--prompts prompts a request), so only the decoder and its batching are measured.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model  # noqa: E402


def decoder_inputs(e: int, prompts: int, rng: np.random.Generator):
    import tritonclient.grpc as tc

    s = 16 * e
    feed = {
        "image_embeddings": rng.normal(size=(1, 256, e, e)).astype(np.float16),
        "point_coords": np.concatenate(
            [rng.uniform(0, s, (1, prompts, 1, 2)), np.zeros((1, prompts, 1, 2))], axis=2
        ).astype(np.float32),
        "point_labels": np.tile(np.array([[[1.0, -1.0]]], np.float32), (1, prompts, 1)),
        "mask_input": np.zeros((1, prompts, 1, 4 * e, 4 * e), np.float32),
        "has_mask_input": np.zeros((1, prompts), np.float32),
    }
    inputs = []
    for name, arr in feed.items():
        i = tc.InferInput(name, list(arr.shape), "FP16" if arr.dtype == np.float16 else "FP32")
        i.set_data_from_numpy(arr)
        inputs.append(i)
    return inputs


def throughput(url: str, clients: int, seconds: float, e: int, prompts: int) -> tuple[float, int, int]:
    """(requests per second, inferences, executions) with `clients` threads back to back."""
    import tritonclient.grpc as tc

    stats = tc.InferenceServerClient(url)
    before = stats.get_inference_statistics("sam_decoder").model_stats[0]
    done = [0] * clients
    end = time.perf_counter() + seconds

    def client(k: int) -> None:
        c = tc.InferenceServerClient(url)
        inputs = decoder_inputs(e, prompts, np.random.default_rng(k))
        while time.perf_counter() < end:
            c.infer("sam_decoder", inputs)
            done[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    after = stats.get_inference_statistics("sam_decoder").model_stats[0]
    return (
        sum(done) / elapsed,
        after.inference_count - before.inference_count,
        after.execution_count - before.execution_count,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["small", "vit_b"], default="small")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--prompts", type=int, default=1, help="prompts per request")
    args = p.parse_args()

    from build_engines.repository import write_cpu_repository
    from samserve.devtools.local_servers import start_triton

    work = Path(tempfile.mkdtemp(prefix="samserve-batching-"))
    loaded = load_model(args.model)
    batched = write_cpu_repository(loaded, work / "batched")
    unbatched = work / "unbatched"
    shutil.copytree(batched, unbatched)
    config = unbatched / "sam_decoder" / "config.pbtxt"
    config.write_text(re.sub(r"dynamic_batching \{[^}]*\}", "", config.read_text()))
    e = loaded.img_size // 16
    rows = []
    for name, repo in (("dynamic batching", batched), ("no dynamic batching", unbatched)):
        server = start_triton(repo, work / f"{name.replace(' ', '_')}.log", work)
        try:
            throughput(server.grpc_url, 2, 1.0, e, args.prompts)  # warm-up
            for clients in (1, 8):
                rows.append((name, clients, *throughput(server.grpc_url, clients, args.seconds, e, args.prompts)))
        finally:
            server.stop()
    base = {(n, c): t for n, c, t, _, _ in rows}
    print(
        f"\nsam_decoder, model {args.model} (S={loaded.img_size}), {args.prompts} prompt(s) a request, "
        f"{args.seconds:.0f} s a run"
    )
    print(f"{'config':22s} {'clients':>7s} {'req/s':>8s} {'inferences/execution':>21s} {'vs 1 client':>12s}")
    for name, clients, tput, inf, ex in rows:
        print(f"{name:22s} {clients:7d} {tput:8.1f} {inf / max(ex, 1):21.2f} {tput / base[(name, 1)]:12.2f}")
    ratio = base[("dynamic batching", 8)] / base[("no dynamic batching", 8)]
    print(f"\nat 8 clients: dynamic batching / no dynamic batching = {ratio:.2f}x")


if __name__ == "__main__":
    main()
