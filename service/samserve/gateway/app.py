"""The gateway's composition: backends (Triton client, Redis cache) -> engine -> gRPC server.
One function for the CLI and the tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from samserve.gateway.backends.redis_cache import RedisCache
from samserve.gateway.backends.triton import TritonBackend
from samserve.gateway.engine import SamEngine
from samserve.gateway.metrics import Metrics
from samserve.gateway.settings import Settings, redact_url
from samserve.gateway.transport.server import GrpcServer, start_grpc_server

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    grpc: GrpcServer
    engine: SamEngine
    metrics: Metrics

    @property
    def port(self) -> int:
        return self.grpc.port

    async def stop(self, grace: float = 2.0) -> None:
        await self.grpc.stop(grace)
        await self.engine.close()


def compose_engine(settings: Settings, metrics: Metrics) -> SamEngine:
    cache = None
    if settings.redis_url:
        cache = RedisCache(
            settings.redis_url,
            settings.redis_timeout_s,
            settings.redis_retry_after_s,
            on_error=lambda op: metrics.cache_errors.labels(op).inc(),
            tls_ca_file=str(settings.redis_tls_ca_file) if settings.redis_tls_ca_file else None,
        )
    return SamEngine(settings, TritonBackend(settings.triton_url, settings.triton_timeout_s), cache, metrics)


async def start_gateway(settings: Settings, metrics: Metrics | None = None) -> Gateway:
    metrics = metrics or Metrics()
    engine = compose_engine(settings, metrics)
    server = await start_grpc_server(engine, settings, metrics)
    log.info("gateway backends: Triton %s, Redis %s", settings.triton_url, redact_url(settings.redis_url) or "disabled")
    return Gateway(server, engine, metrics)
