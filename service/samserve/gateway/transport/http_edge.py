"""The HTTP API's edge, before any route runs: the body limit and its minimum rate, bearer
tokens, the client's identity, per-route metrics, the response headers every answer carries,
and the end of a response its client stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from samserve.gateway.metrics import Metrics
from samserve.gateway.request_id import CLIENT, client_key
from samserve.gateway.transport.auth import bearer_valid

log = logging.getLogger(__name__)

# routes that take or return user data need a token (when tokens are set); the page, its
# files, the schema and the health probe stay open, as gRPC's health and reflection do
PROTECTED_PREFIX = "/v1/"
OPEN_PATHS = ("/v1/health",)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self'; "
        b"script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'",
    ),
]


# an answer given before the body was read closes the connection: the client stops uploading
CLOSE = (b"connection", b"close")


class BodyTooLarge(Exception):
    pass


class BodyTooSlow(Exception):
    pass


class ClientStalled(Exception):
    """The client read none of the response for the idle timeout: its connection was closed."""


# a body's first seconds are free of the rate (a connection's start, a phone waking its radio)
BODY_GRACE_S = 2.0
# and bytes sent early buy no long silence later: the next ones are due within this at most
BODY_MAX_PAUSE_S = 10.0


def error_body(http: int, status: str, message: str) -> bytes:
    return json.dumps({"error": {"code": http, "status": status, "message": message}}).encode()


class HttpEdge:
    """Pure ASGI middleware. A body over `max_body` is refused from its Content-Length before
    it is read, or as soon as the bytes received pass the limit (BodyTooLarge is raised inside
    the route's read, which answers 413); one that falls below `min_rate` bytes/s after its
    first BODY_GRACE_S, or pauses past BODY_MAX_PAUSE_S, raises BodyTooSlow there (408). The
    rate counts the time the route waits for the body, not the time it spends working between
    reads. A response part the client does not take
    within `idle_s` closes the connection (uvicorn has no write timeout), ending the route's work."""

    def __init__(
        self,
        app,
        metrics: Metrics,
        routes: set[str],
        max_body: int,
        tokens: list[str],
        idle_s: float = 30.0,
        min_rate: float = 32 * 1024,
        streamed: frozenset[str] = frozenset(),
    ) -> None:
        """streamed: routes that read their body part by part as they use it (EmbedMany), with
        limits of their own on each part: no whole-body limit here, the rate still."""
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.streamed = streamed
        self.max_body = max_body
        self.tokens = [t.encode() for t in tokens]
        self.idle_s = idle_s
        self.min_rate = min_rate

    def _needs_token(self, path: str) -> bool:
        return bool(self.tokens) and path.startswith(PROTECTED_PREFIX) and path not in OPEN_PATHS

    def _route(self, path: str) -> str:
        if path in self.routes:
            return path
        return "/static" if path.startswith("/static/") else "other"  # bounded label values

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # the path the router matches (a root_path, were one set, is stripped before routing)
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        route = self._route(path)
        started = time.perf_counter()
        status = [500]

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                extra = SECURITY_HEADERS + ([(b"cache-control", b"no-cache")] if route == "/static" else [])
                message["headers"] = list(message.get("headers", [])) + extra
            try:  # uvicorn's send waits while the client's socket buffer is full (the start's too)
                await asyncio.wait_for(send(message), self.idle_s)
            except TimeoutError:
                _close(send)
                await asyncio.sleep(0)  # the server sees the connection lost before the route returns
                raise ClientStalled from None

        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"").decode("latin-1")
        token = authorization.removeprefix("Bearer ").strip() if self.tokens else None
        client = scope.get("client") or ("", 0)
        CLIENT.set(client_key(token, client[0]))
        try:
            if self._needs_token(path) and not bearer_valid(authorization, self.tokens):
                self.metrics.requests.labels("any", "UNAUTHENTICATED", "").inc()
                message = "missing or invalid credentials: send header 'Authorization: Bearer <token>'"
                body = error_body(401, "UNAUTHENTICATED", message)
                return await _answer(send_with_headers, 401, body, [(b"www-authenticate", b"Bearer"), CLOSE])
            max_body = None if path in self.streamed else self.max_body
            length = headers.get(b"content-length")
            if max_body is not None and length is not None and length.isdigit() and int(length) > max_body:
                await _answer(send_with_headers, 413, self._too_large(), [CLOSE])
                return await _drain(receive)
            received = 0
            complete = False
            waited = 0.0  # time spent waiting for the client's bytes: a route that reads on
            loop = asyncio.get_running_loop()  # as it works (EmbedMany) holds the client back

            async def limited_receive():
                nonlocal received, complete, waited
                if complete:  # the body is in: what follows is the disconnect, whenever it comes
                    return await receive()
                # the next bytes, to keep the rate on average and pause no longer than BODY_MAX_PAUSE_S
                due = min(BODY_GRACE_S + received / self.min_rate - waited, BODY_MAX_PAUSE_S)
                asked = loop.time()
                try:
                    message = await asyncio.wait_for(receive(), max(due, 0.001))
                except TimeoutError:
                    raise BodyTooSlow from None
                finally:
                    waited += loop.time() - asked
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    complete = not message.get("more_body", False)
                    if max_body is not None and received > max_body:
                        raise BodyTooLarge
                return message

            try:
                await self.app(scope, limited_receive, send_with_headers)
            except ClientStalled:
                self.metrics.stalled_clients.labels("http").inc()
                log.info(
                    "HTTP %s %s: the client read nothing for %g s; connection closed",
                    scope["method"],
                    path,
                    self.idle_s,
                )
        finally:
            self.metrics.http_requests.labels(route, str(status[0])).inc()
            self.metrics.http_latency.labels(route).observe(time.perf_counter() - started)

    def _too_large(self) -> bytes:
        return error_body(413, "RESOURCE_EXHAUSTED", f"request body: over the limit of {self.max_body} bytes")


def _close(send) -> None:
    """Aborts the connection of uvicorn's `send` (its protocol's transport), where it has one."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()


DRAIN_BYTES, DRAIN_S = 16 << 20, 2.0


async def _drain(receive) -> None:
    """Reads and drops what the client still sends of a body refused by its length, a bounded
    while (DRAIN_BYTES, DRAIN_S), before the connection closes: closing on unread bytes makes the
    kernel reset it, and the client, still sending, would lose the answer (a lingering close)."""
    loop = asyncio.get_running_loop()
    ends, drained = loop.time() + DRAIN_S, 0
    with contextlib.suppress(TimeoutError, Exception):
        while drained < DRAIN_BYTES:
            message = await asyncio.wait_for(receive(), max(ends - loop.time(), 0.001))
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


async def _answer(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": body})
