"""The long fuzz run: hostile requests to every RPC against the real stack (redis-server,
tritonserver, gateway), drawn from samserve.devtools.fuzz_cases (the suite runs a short one).

    .venv/bin/python benchmarks/fuzz.py                  # 10,000 cases
    .venv/bin/python benchmarks/fuzz.py --cases 2000

Prints the cases per RPC, a histogram of statuses, the count of INTERNAL/UNKNOWN (goal: 0) and
the resident memory of the gateway (this process) and of Triton (with its model processes)
before and after. Exits 1 when any answer had an undocumented status or the stack stopped
serving.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stack import load_model, local_stack  # noqa: E402

SHARES = {"Embed": 0.3, "Segment": 0.5, "GenerateMasks": 0.2}


def rss_mb(pid: int, children: bool = False) -> float:
    import psutil

    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)] if children else [proc]
    return sum(p.memory_info().rss for p in procs) / 1e6


def run_rpc(rpc: str, method, n: int, seed_value: int, statuses, bad: list[str]) -> None:
    import grpc
    from hypothesis import HealthCheck, given, seed, settings

    from samserve.devtools.fuzz_cases import DOCUMENTED, RPCS

    @seed(seed_value)
    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(request=RPCS[rpc])
    def one(request):
        try:
            method(request, timeout=60)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
            if code not in DOCUMENTED:
                bad.append(f"{rpc} {code}: {exc.details()} <- {str(request)[:300]!r}")
        statuses[rpc][code] += 1

    one()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the gateway logs every refusal at WARNING: too many to read

    import grpc

    from samserve.devtools.fuzz_cases import DOCUMENTED, RPCS, VALID
    from samserve.v1 import samserve_pb2 as pb
    from samserve.v1 import samserve_pb2_grpc as pb_grpc

    statuses: dict[str, collections.Counter] = {rpc: collections.Counter() for rpc in RPCS}
    bad: list[str] = []
    with local_stack(load_model("small"), prefix="samserve-fuzz-") as stack:
        channel = grpc.insecure_channel(stack.gateways[0].target, options=[("grpc.max_send_message_length", 64 << 20)])
        stub = pb_grpc.SegmentAnythingStub(channel)
        stub.Segment(pb.SegmentRequest(image=VALID, prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]))
        before = rss_mb(os.getpid()), rss_mb(stack.triton.proc.pid, children=True)
        started = time.monotonic()
        for rpc, share in SHARES.items():
            run_rpc(rpc, getattr(stub, rpc), max(1, round(args.cases * share)), args.seed, statuses, bad)
            print(f"{rpc}: {sum(statuses[rpc].values())} cases, {time.monotonic() - started:.0f} s so far", flush=True)
        after = rss_mb(os.getpid()), rss_mb(stack.triton.proc.pid, children=True)
        final = stub.Segment(pb.SegmentRequest(image=VALID, prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]))
        channel.close()

    total = sum(sum(c.values()) for c in statuses.values())
    print(f"\n{total} cases in {time.monotonic() - started:.0f} s")
    print(f"{'rpc':14s} {'status':20s} {'count':>7s}")
    for rpc, counter in statuses.items():
        for code, n in counter.most_common():
            print(f"{rpc:14s} {code:20s} {n:7d}")
    undocumented = sum(n for c in statuses.values() for code, n in c.items() if code not in DOCUMENTED)
    internal = sum(c["INTERNAL"] + c["UNKNOWN"] for c in statuses.values())
    print(f"INTERNAL/UNKNOWN: {internal}; any undocumented status: {undocumented}")
    print(f"gateway RSS {before[0]:.0f} -> {after[0]:.0f} MB; Triton RSS {before[1]:.0f} -> {after[1]:.0f} MB")
    print(f"still serving after the run: {len(final.results[0].masks) == 3}")
    for line in bad[:20]:
        print("  " + line)
    return 1 if undocumented or len(final.results[0].masks) != 3 else 0


if __name__ == "__main__":
    sys.exit(main())
