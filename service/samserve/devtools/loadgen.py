"""An async gRPC load generator for samserve: closed loop (N clients back to back) or open
loop (Poisson arrivals at a rate, latency counted from the scheduled send time so a slow
server cannot hide its queueing), over a sweep of concurrencies, cache hits and misses apart."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np

from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc

RPCS = ("embed", "segment", "generate_masks")


@dataclass
class RunResult:
    rpc: str
    cache: str  # "hit" | "miss"
    concurrency: int
    mode: str  # "closed" | "open"
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)  # successful requests
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies_s)

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q)) if self.latencies_s else float("nan")


def unique_images(base: bytes) -> Callable[[], bytes]:
    """Distinct bytes per call (a counter after the image's end, which decoders ignore), so
    each request is a cache miss with the same pixels and the same work."""
    counter = itertools.count()
    return lambda: base + b"\0samserve-bench" + next(counter).to_bytes(8, "little")


def make_request(rpc: str, image: bytes, point: tuple[float, float], amg_points: int):
    if rpc == "embed":
        return "Embed", pb.EmbedRequest(image=image)
    if rpc == "segment":
        prompt = pb.Prompt(points=[pb.Point(x=point[0], y=point[1], label=1)])
        return "Segment", pb.SegmentRequest(image=image, prompts=[prompt])
    return "GenerateMasks", pb.GenerateMasksRequest(image=image, options=pb.AmgOptions(points_per_side=amg_points))


class LoadGenerator:
    def __init__(
        self,
        target: str,
        image: bytes,
        point: tuple[float, float],
        token: str | None = None,
        timeout_s: float = 60.0,
        amg_points: int = 8,
        root_certificates: bytes | None = None,
    ) -> None:
        self.target = target
        self.image = image
        self.point = point
        self.metadata = (("authorization", f"Bearer {token}"),) if token else None
        self.timeout_s = timeout_s
        self.amg_points = amg_points
        self.root_certificates = root_certificates

    def _channel(self) -> grpc.aio.Channel:
        options = [("grpc.max_send_message_length", 1 << 28), ("grpc.max_receive_message_length", 1 << 28)]
        if self.root_certificates is not None:
            return grpc.aio.secure_channel(self.target, grpc.ssl_channel_credentials(self.root_certificates), options)
        return grpc.aio.insecure_channel(self.target, options=options)

    async def _one(self, stub, rpc: str, image: bytes, result: RunResult, scheduled: float | None = None) -> None:
        name, request = make_request(rpc, image, self.point, self.amg_points)
        start = scheduled if scheduled is not None else time.perf_counter()
        try:
            await getattr(stub, name)(request, timeout=self.timeout_s, metadata=self.metadata)
            result.latencies_s.append(time.perf_counter() - start)
        except grpc.aio.AioRpcError as exc:
            result.errors[exc.code().name] = result.errors.get(exc.code().name, 0) + 1

    async def run(
        self,
        rpc: str,
        cache: str,
        concurrency: int,
        duration_s: float,
        mode: str = "closed",
        rate: float | None = None,
        on_request: Callable[[], None] = lambda: None,
    ) -> RunResult:
        """closed: `concurrency` clients, each sends its next request when the last returns.
        open: Poisson arrivals at `rate` per second, at most `concurrency` outstanding."""
        if rpc not in RPCS or cache not in ("hit", "miss") or mode not in ("closed", "open") or concurrency < 1:
            raise ValueError(f"rpc must be one of {RPCS}, cache hit|miss, mode closed|open, concurrency >= 1")
        next_image = unique_images(self.image) if cache == "miss" else (lambda: self.image)
        async with self._channel() as channel:
            stub = pb_grpc.SegmentAnythingStub(channel)
            if cache == "hit":  # the image is embedded before the clock starts
                await self._one(stub, "embed", self.image, RunResult(rpc, cache, 0, mode, 0))
            result = RunResult(rpc, cache, concurrency, mode, duration_s)
            end = time.perf_counter() + duration_s
            started = time.perf_counter()
            if mode == "closed":

                async def client() -> None:
                    while time.perf_counter() < end:
                        await self._one(stub, rpc, next_image(), result)
                        on_request()

                await asyncio.gather(*(client() for _ in range(concurrency)))
            else:
                if not rate:
                    raise ValueError("open-loop mode needs a rate (requests per second)")
                rng = np.random.default_rng(0)
                limit = asyncio.Semaphore(concurrency)
                tasks = []
                t = time.perf_counter()
                while t < end:
                    t += float(rng.exponential(1.0 / rate))
                    await asyncio.sleep(max(0.0, t - time.perf_counter()))
                    if limit.locked():  # over the outstanding bound: the arrival is shed, counted
                        result.errors["SHED_BY_CLIENT"] = result.errors.get("SHED_BY_CLIENT", 0) + 1
                        continue

                    async def fire(scheduled: float) -> None:
                        async with limit:
                            await self._one(stub, rpc, next_image(), result, scheduled)
                            on_request()

                    tasks.append(asyncio.create_task(fire(t)))
                await asyncio.gather(*tasks)
            result.duration_s = time.perf_counter() - started
            return result
