"""Bearer-token authentication and TLS credentials for the gateway."""

from __future__ import annotations

import hmac

import grpc

from samserve.gateway.settings import Settings

# Probes and discovery stay open: kubelet's gRPC probe and grpcurl's listing carry no token.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def bearer_valid(header: object, tokens: list[bytes]) -> bool:
    """`header` is "Bearer <one of tokens>" (gRPC metadata and HTTP's Authorization alike)."""
    if not isinstance(header, str) or not header.startswith("Bearer "):
        return False
    given = header[len("Bearer ") :].encode()
    # compare against every token, in constant time per token
    return any([hmac.compare_digest(given, t) for t in tokens])


def authorization(metadata) -> str:
    """The first 'authorization' value of gRPC metadata ('' if none): the one the interceptor
    checks, and so the one that names the client (a later one could be anything)."""
    for key, value in metadata or ():
        if key == "authorization":
            return value
    return ""


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: list[str], on_denied=lambda: None) -> None:
        self._tokens = [t.encode() for t in tokens]
        self._on_denied = on_denied

    def _authorized(self, metadata) -> bool:
        return bearer_valid(authorization(metadata), self._tokens)

    async def intercept_service(self, continuation, handler_call_details):
        if handler_call_details.method.startswith(OPEN_PREFIXES) or self._authorized(
            handler_call_details.invocation_metadata
        ):
            return await continuation(handler_call_details)
        self._on_denied()
        handler = await continuation(handler_call_details)

        async def deny(request, context):
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or invalid credentials: send metadata 'authorization: Bearer <token>'",
            )

        async def deny_stream(request, context):  # a server stream: refused before its first message
            await deny(request, context)
            yield  # pragma: no cover - abort raises

        if handler is None:
            return None
        # the denial has the method's own kind: a streaming method refused by a unary handler
        # would leave the client waiting for a status
        make = {
            (False, False): (grpc.unary_unary_rpc_method_handler, deny),
            (False, True): (grpc.unary_stream_rpc_method_handler, deny_stream),
            (True, False): (grpc.stream_unary_rpc_method_handler, deny),
            (True, True): (grpc.stream_stream_rpc_method_handler, deny_stream),
        }
        factory, behaviour = make[(handler.request_streaming, handler.response_streaming)]
        return factory(
            behaviour,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )
