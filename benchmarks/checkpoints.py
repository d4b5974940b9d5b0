"""Serving cost of two small checkpoints, side by side in one run (e.g. the shipped model
against a candidate at a larger input size): each is served by its own redis-server,
tritonserver (CPU repository) and gateway, and their requests alternate.

    .venv/bin/python benchmarks/checkpoints.py models/sam_small_shapes.pth /tmp/candidate.pth

Images are held-out synthetic scenes (long side 256, the models' domain). Prints median / p90
per operation for each checkpoint and the ratio B / A.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import local_stack  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--repeats", type=int, default=20, help="per operation and checkpoint (AMG: a quarter of it)")
    args = p.parse_args()

    from build_engines.models import load_checkpoint
    from samserve.client import PromptSpec, SamClient
    from samserve.devtools.sample_images import encode
    from training.synthetic import make_scene, random_size

    def scene(seed: int) -> bytes:
        rng = np.random.default_rng(seed)
        return encode(make_scene(rng, *random_size(rng, 256)).image)

    n, n_amg = args.repeats, max(2, args.repeats // 4)
    misses = {name: [scene(3_000_000 + 1000 * k + i) for i in range(n)] for k, name in enumerate("AB")}
    hit = scene(3_100_000)
    point = [PromptSpec(points=[(100.0, 80.0)], labels=[1])]
    times: dict[tuple[str, str], list[float]] = {}
    with contextlib.ExitStack() as stack:
        clients, sizes = {}, {}
        for name, path in (("A", args.a), ("B", args.b)):
            loaded = load_checkpoint(path, "small")
            sizes[name] = loaded.img_size
            served = stack.enter_context(local_stack(loaded, prefix=f"samserve-ckpt-{name}-"))
            clients[name] = stack.enter_context(SamClient(served.gateways[0].target, timeout_s=600))
            clients[name].segment(hit, point)  # warm the encoder and decoder, and cache `hit`
        ops = {
            "Embed (miss: encoder)": (n, lambda c, name, i: c.embed(misses[name][i])),
            "Segment (hit, 1 point, 3 masks)": (n, lambda c, name, i: c.segment(hit, point)),
            "AMG (hit, points_per_side 16)": (n_amg, lambda c, name, i: c.generate_masks(hit, points_per_side=16)),
        }
        for op, (reps, fn) in ops.items():
            for i in range(reps):
                for name in "AB" if i % 2 == 0 else "BA":  # alternate who goes first
                    t = time.perf_counter()
                    fn(clients[name], name, i)
                    times.setdefault((op, name), []).append(time.perf_counter() - t)
    print(f"\nA = {args.a} (S={sizes['A']}), B = {args.b} (S={sizes['B']}); one client each, alternating")
    print(f"{'operation':34s} {'A median ms':>12s} {'A p90':>8s} {'B median ms':>12s} {'B p90':>8s} {'B / A':>7s}")
    for op in ops:
        a, b = times[(op, "A")], times[(op, "B")]
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"{op:34s} {ma * 1e3:12.1f} {np.percentile(a, 90) * 1e3:8.1f} "
            f"{mb * 1e3:12.1f} {np.percentile(b, 90) * 1e3:8.1f} {mb / ma:7.2f}"
        )


if __name__ == "__main__":
    main()
