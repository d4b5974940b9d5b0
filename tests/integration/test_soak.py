"""A soak of a few thousand requests against a gateway process: its memory stays bounded."""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
import sys
import time

import grpc
import psutil

from samserve.client import PromptSpec, SamClient
from samserve.devtools.local_servers import free_port
from samserve.devtools.sample_images import png_image
from samserve.v1 import samserve_pb2 as pb

REQUESTS = 2000


def test_gateway_rss_stays_bounded_over_a_soak(triton_server, redis_server, tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "samserve.client.cli",
            "serve",
            "--no-embedded",
            "--port",
            str(port),
            "--metrics-port",
            str(free_port()),
            "--http-port",
            str(free_port()),
            "--triton-url",
            triton_server.grpc_url,
            "--redis-url",
            redis_server.url,
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "gateway.log").open("wb"),
        start_new_session=True,
    )
    try:
        target = f"127.0.0.1:{port}"
        images = [png_image(160, 200, 7000 + i) for i in range(8)]
        bad = pb.SegmentRequest(image=images[0], prompts=[pb.Prompt(points=[pb.Point(x=-1, y=0, label=1)])])

        def one(i: int) -> str:
            with SamClient(target, timeout_s=30) as c:
                try:
                    kind = i % 4
                    if kind == 0:
                        c.embed(images[i % 8])
                    elif kind == 1:
                        c.segment(images[i % 8], [PromptSpec(points=[(20, 30)], labels=[1])])
                    elif kind == 2:
                        c.stub.Segment(bad, timeout=30)
                    else:
                        c.embed(b"garbage" * (i % 50))
                    return "OK"
                except grpc.RpcError as exc:
                    return exc.code().name

        deadline = time.monotonic() + 30
        while True:
            try:
                with SamClient(target, timeout_s=5) as c:
                    c.embed(images[0])
                break
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        with cf.ThreadPoolExecutor(8) as pool:  # warm-up: caches, pools, arenas
            list(pool.map(one, range(200)))
        rss_before = psutil.Process(proc.pid).memory_info().rss
        started = time.monotonic()
        with cf.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(one, range(REQUESTS)))
        elapsed = time.monotonic() - started
        rss_after = psutil.Process(proc.pid).memory_info().rss
        print(
            f"\nsoak: {REQUESTS} requests in {elapsed:.1f}s; gateway RSS {rss_before / 2**20:.1f} MiB -> "
            f"{rss_after / 2**20:.1f} MiB"
        )
        assert set(codes) == {"OK", "INVALID_ARGUMENT"}, set(codes)
        assert rss_after - rss_before < 64 * 2**20, (rss_before, rss_after)
    finally:
        proc.terminate()
        proc.wait(15)
