"""The one place where the project's exceptions become status codes (gRPC's; the HTTP API maps
those to HTTP codes), for every transport."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from samserve.core.errors import (
    BackendError,
    BackendUnavailable,
    Cancelled,
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    OverCapacity,
    Overloaded,
    SamServeError,
)
from samserve.gateway.metrics import Metrics
from samserve.gateway.request_id import REQUEST_ID

log = logging.getLogger(__name__)
T = TypeVar("T")

STATUS = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    BackendUnavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    BackendError: grpc.StatusCode.INTERNAL,
    Cancelled: grpc.StatusCode.CANCELLED,
}
# Errors the client cannot act on carry the request id, the key to the server's log line.
WITH_REQUEST_ID = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)


def status_of(exc: SamServeError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


class Admission:
    """At most `limit` RPCs at once over every transport; the excess is refused at once rather
    than queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    @contextlib.contextmanager
    def slot(self):
        """Holds one slot (work outside an RPC's own: reading an EmbedMany upload)."""
        if self.active >= self.limit:
            raise OverCapacity(f"over capacity: {self.limit} requests in flight; retry with backoff")
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class RpcFailure(Exception):
    """An RPC's outcome other than OK: the status and the message the client is given, and the
    error's class (a transport may say more: HTTP's 413 for RequestTooLarge, Retry-After)."""

    def __init__(self, code: grpc.StatusCode, message: str, kind: type[Exception] = Exception) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.kind = kind

    @property
    def retryable(self) -> bool:
        """Busy or away now, not wrong: the same request may succeed later."""
        return issubclass(self.kind, (OverCapacity, BackendUnavailable))


async def run_rpc(
    method: str, work: Awaitable[T], metrics: Metrics, admission: Admission, model: Callable[[], str] = str
) -> T:
    """One RPC of any transport: admission, metrics, a log line, and status mapping. Returns
    the response, or raises RpcFailure (asyncio.CancelledError passes through, counted).
    model() names the request's model for the metrics, asked when the RPC has ended."""
    request_id = uuid.uuid4().hex[:12]
    REQUEST_ID.set(request_id)
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    message = ""
    kind: type[Exception] = Exception
    admitted = admission.active < admission.limit
    if admitted:
        admission.active += 1
        metrics.in_flight.inc()
    try:
        if not admitted:
            raise OverCapacity(f"over capacity: {admission.limit} requests in flight; retry with backoff")
        return await work
    except SamServeError as exc:
        code, message, kind = status_of(exc), str(exc), type(exc)
        if code in WITH_REQUEST_ID:
            message = f"{message} (request id {request_id})"
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        log.exception("request %s (%s) failed unexpectedly", request_id, method)
        code, message = grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})"
    finally:
        if inspect.iscoroutine(work):
            work.close()  # not awaited when refused: no "never awaited" warning
        if admitted:
            admission.active -= 1
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        label = model()
        metrics.requests.labels(method, code.name, label).inc()
        metrics.latency.labels(method, code.name, label).observe(elapsed)
        log.debug("request %s %s %s %.1f ms", request_id, method, code.name, elapsed * 1000)
    log.warning("request %s %s -> %s: %s", request_id, method, code.name, message)
    raise RpcFailure(code, message, kind)
