"""The gRPC server over the shared RPCs (servicer, auth, health, reflection). The engine and its
backends are built by samserve.gateway.app, which the CLI and the tests both call."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from samserve.gateway.metrics import Metrics
from samserve.gateway.settings import Settings
from samserve.gateway.transport.auth import BearerTokenInterceptor, server_credentials
from samserve.gateway.transport.health import HealthWatch
from samserve.gateway.transport.rpcs import Rpcs
from samserve.gateway.transport.servicer import SegmentAnythingServicer
from samserve.gateway.transport.status import Admission
from samserve.gateway.transport.video_rpcs import VideoRpcs
from samserve.gateway.transport.video_servicer import VideoTrackingServicer
from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SegmentAnything"].full_name
VIDEO_SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VideoTracking"].full_name


@dataclass
class GrpcServer:
    server: grpc.aio.Server
    port: int

    async def stop(self, grace: float = 2.0) -> None:
        await self.server.stop(grace)


async def start_grpc_server(
    rpcs: Rpcs,
    settings: Settings,
    metrics: Metrics,
    admission: Admission,
    health_watch: HealthWatch,
    video: VideoRpcs | None = None,
) -> GrpcServer:
    options = [
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        ("grpc.max_send_message_length", settings.max_response_bytes),
    ]
    interceptors = []
    if settings.auth_tokens:
        interceptors.append(
            BearerTokenInterceptor(
                settings.tokens(), on_denied=lambda: metrics.requests.labels("any", "UNAUTHENTICATED", "").inc()
            )
        )
    server = grpc.aio.server(options=options, interceptors=interceptors)
    images = SegmentAnythingServicer(
        rpcs,
        metrics,
        admission,
        settings.stream_idle_timeout_s,
        settings.stream_max_s,
        by_token=bool(settings.auth_tokens),
    )
    pb_grpc.add_SegmentAnythingServicer_to_server(images, server)
    if video is not None:
        pb_grpc.add_VideoTrackingServicer_to_server(
            VideoTrackingServicer(video, metrics, admission, images._identify, settings.stream_idle_timeout_s), server
        )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    async def set_health(ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME, VIDEO_SERVICE_NAME):
            await health_servicer.set(name, status)

    await set_health(health_watch.ready)
    health_watch.on_change(set_health)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            VIDEO_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    creds = server_credentials(settings)
    address = f"{settings.host}:{settings.port}"
    port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot bind the gRPC port {settings.host}:{settings.port}")
    await server.start()
    security = ("mutual TLS" if settings.tls_client_ca_file else "TLS") if creds else "plaintext"
    log.info(
        "gRPC gateway listening on %s:%d (%s, %s)",
        settings.host,
        port,
        security,
        "bearer tokens" if settings.auth_tokens else "no authentication",
    )
    return GrpcServer(server, port)
