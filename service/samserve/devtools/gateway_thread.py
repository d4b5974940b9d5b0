"""Running the gateway of the real stack inside the test process, on its own event loop thread."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

from samserve.gateway.app import Gateway, start_gateway
from samserve.gateway.metrics import Metrics
from samserve.gateway.settings import Settings


class GatewayThread:
    """A real grpc.aio gateway (start_gateway, as the CLI builds it) on a background loop."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.metrics = Metrics()
        self.gateway: Gateway = self.call(start_gateway(settings, self.metrics))
        self.target = f"127.0.0.1:{self.gateway.port}"
        scheme = "https" if settings.tls_cert_file else "http"
        self.http_url = None if self.gateway.http_port is None else f"{scheme}://127.0.0.1:{self.gateway.http_port}"

    def call(self, coro, timeout: float = 60):
        fut: Future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def metric(self, name: str, labels: dict | None = None) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 when none)."""
        want = (labels or {}).items()
        return sum(
            s.value
            for family in self.metrics.registry.collect()
            for s in family.samples
            if s.name == name and want <= s.labels.items()
        )

    def crash(self) -> None:
        """Stops the loop where it is, as a killed process stops: no call finishes, no lock is
        given back, nothing is cleaned up (the gRPC port stays open and answers nothing)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def stop(self) -> None:
        """Stops the gateway and its loop; a second call (or one after crash) does nothing."""
        if not self.thread.is_alive():
            return
        try:
            self.call(self.gateway.stop(0.5))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def gateway_settings(triton_url: str, redis_url: str | None, **overrides) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        http_port=0,
        metrics_enabled=False,
        embedded=False,
        triton_url=triton_url,
        redis_url=redis_url,
        redis_retry_after_s=0.2,
        **overrides,
    )
