"""The gateway's composition: backends (Triton client, Redis cache) -> engine -> the shared
RPCs -> the gRPC server and the HTTP/JSON server. One function for the CLI and the tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from samserve.gateway.backends.redis_cache import RedisCache, layout_problem
from samserve.gateway.backends.triton import TritonBackend
from samserve.gateway.backends.triton_shm import is_local
from samserve.gateway.engine import SamEngine
from samserve.gateway.metrics import Metrics
from samserve.gateway.settings import Settings, redact_url
from samserve.gateway.transport.health import HealthWatch
from samserve.gateway.transport.http_api import HttpApi
from samserve.gateway.transport.http_server import HttpServer, start_http_server
from samserve.gateway.transport.rpcs import Rpcs
from samserve.gateway.transport.server import GrpcServer, start_grpc_server
from samserve.gateway.transport.status import Admission
from samserve.gateway.transport.video_rpcs import VideoRpcs
from samserve.gateway.video.session_store import SessionStore
from samserve.gateway.video.sessions import VideoSessions

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    grpc: GrpcServer
    http: HttpServer | None
    engine: SamEngine
    metrics: Metrics
    health: HealthWatch

    @property
    def port(self) -> int:
        return self.grpc.port

    @property
    def http_port(self) -> int | None:
        return None if self.http is None else self.http.port

    async def stop(self, grace: float = 2.0) -> None:
        await self.health.stop()
        if self.http is not None:
            await self.http.stop(grace)
        await self.grpc.stop(grace)
        await self.engine.close()


def compose_engine(settings: Settings, metrics: Metrics) -> SamEngine:
    cache = state = None

    def redis(url: str) -> RedisCache:
        return RedisCache(
            url,
            settings.redis_timeout_s,
            settings.redis_retry_after_s,
            on_error=lambda op: metrics.cache_errors.labels(op).inc(),
            tls_ca_file=str(settings.redis_tls_ca_file) if settings.redis_tls_ca_file else None,
        )

    if settings.redis_url:
        cache = redis(settings.redis_url)
        same = settings.state_redis_url in (None, "", settings.redis_url)
        state = cache if same else redis(settings.state_redis_url)
    shm = settings.triton_shared_memory == "on" or (
        settings.triton_shared_memory == "auto" and is_local(settings.triton_url)
    )
    triton = TritonBackend(settings.triton_url, settings.triton_timeout_s, shared_memory=shm)
    return SamEngine(settings, triton, cache, metrics, state)


def compose_video(engine: SamEngine, settings: Settings) -> VideoSessions:
    """Video sessions over the engine's embeddings and models; their state in the state Redis."""
    store = None
    if engine.state is not None:
        store = SessionStore(
            engine.state,
            settings.video_session_ttl_s,
            settings.video_max_sessions,
            settings.video_local_bytes,
            settings.lock_ttl_s,
        )
    return VideoSessions(settings, engine.embeddings, store, engine.model, engine.run_cpu)


async def start_gateway(settings: Settings, metrics: Metrics | None = None) -> Gateway:
    metrics = metrics or Metrics()
    engine = compose_engine(settings, metrics)
    try:
        return await _serve(engine, settings, metrics)
    except BaseException:
        await engine.close()
        raise


async def _serve(engine: SamEngine, settings: Settings, metrics: Metrics) -> Gateway:
    rpcs = Rpcs(engine)
    video = VideoRpcs(compose_video(engine, settings))
    # shared by gRPC and HTTP: the limits are the gateway's
    admission = Admission(settings.max_concurrent_requests, settings.max_requests_per_client)
    health = HealthWatch(engine)
    grpc_server = await start_grpc_server(rpcs, settings, metrics, admission, health, video)
    http_server = None
    if settings.http_enabled:
        try:
            api = HttpApi(rpcs, engine, settings, metrics, admission, health, video)
            http_server = await start_http_server(api.app(), settings)
        except BaseException:
            await grpc_server.stop(0)
            raise
    health.start()
    state = redact_url(settings.state_redis_url) if settings.state_redis_url else "the cache's"
    log.info(
        "gateway backends: Triton %s, Redis %s (state: %s)",
        settings.triton_url,
        redact_url(settings.redis_url) or "disabled",
        state,
    )
    if engine.cache is not None and engine.state is not None:
        problem = await layout_problem(engine.cache, engine.state)
        if problem is not None:
            log.warning("%s", problem)
    return Gateway(grpc_server, http_server, engine, metrics, health)
