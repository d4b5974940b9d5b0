"""The one place where the project's exceptions become status codes (gRPC's; the HTTP API maps
those to HTTP codes), for every transport."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc

from samserve.core.errors import (
    BackendError,
    BackendUnavailable,
    Busy,
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    OverCapacity,
    Overloaded,
    SamServeError,
)
from samserve.gateway.metrics import Metrics
from samserve.gateway.request_id import CLIENT, REQUEST_ID

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
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    Busy: grpc.StatusCode.ABORTED,
}
# Errors the client cannot act on carry the request id, the key to the server's log line.
WITH_REQUEST_ID = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE)


def status_of(exc: SamServeError) -> grpc.StatusCode:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return grpc.StatusCode.INTERNAL


class Admission:
    """At most `limit` RPCs at once over every transport, and `per_client` of one client
    (request_id.CLIENT); the excess is refused at once rather than queued. `what` names the
    slots in the refusal."""

    def __init__(self, limit: int, per_client: int | None = None, what: str = "requests") -> None:
        self.limit = limit
        self.per_client = min(per_client or limit, limit)
        self.what = what
        self.active = 0
        self.by_client: dict[str, int] = {}

    def enter(self, client: str) -> None:
        """Takes a slot for `client`, or raises OverCapacity (RESOURCE_EXHAUSTED, Retry-After)."""
        if self.active >= self.limit:
            raise OverCapacity(f"over capacity: {self.limit} {self.what} in flight; retry with backoff")
        held = self.by_client.get(client, 0)
        if held >= self.per_client:
            raise OverCapacity(
                f"over capacity for this client: {held} of its {self.what} in flight, the most one client "
                "may hold (max_requests_per_client); retry when one has ended"
            )
        self.active += 1
        self.by_client[client] = held + 1

    def leave(self, client: str) -> None:
        self.active -= 1
        held = self.by_client.pop(client) - 1
        if held:
            self.by_client[client] = held

    @contextlib.contextmanager
    def slot(self):
        """Holds one slot of the current client (work outside an RPC's own: receiving a body)."""
        client = CLIENT.get()
        self.enter(client)
        try:
            yield
        finally:
            self.leave(client)


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


@contextlib.asynccontextmanager
async def rpc_scope(method: str, metrics: Metrics, admission: Admission, model: Callable[[], str] = str):
    """The life of one RPC of any transport (a call, or a stream from first to last message):
    admission, metrics, a log line and status mapping. An error inside leaves as RpcFailure;
    cancellation (and a stream closed early) passes through, counted CANCELLED. model() names
    the request's model for the metrics, asked when the RPC has ended."""
    request_id = uuid.uuid4().hex[:12]
    REQUEST_ID.set(request_id)
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    failure: RpcFailure | None = None
    client = CLIENT.get()
    admitted = False
    try:
        admission.enter(client)
        admitted = True
        metrics.in_flight.inc()
        yield
    except SamServeError as exc:
        code, message = status_of(exc), str(exc)
        if code in WITH_REQUEST_ID:
            message = f"{message} (request id {request_id})"
        failure = RpcFailure(code, message, type(exc))
    except (asyncio.CancelledError, GeneratorExit):
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception:
        log.exception("request %s (%s) failed unexpectedly", request_id, method)
        code = grpc.StatusCode.INTERNAL
        failure = RpcFailure(code, f"internal error (request id {request_id})")
    finally:
        if admitted:
            admission.leave(client)
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        label = model()
        metrics.requests.labels(method, code.name, label).inc()
        metrics.latency.labels(method, code.name, label).observe(elapsed)
        log.debug("request %s %s %s %.1f ms", request_id, method, code.name, elapsed * 1000)
    if failure is not None:
        log.warning("request %s %s -> %s: %s", request_id, method, failure.code.name, failure.message)
        raise failure


async def run_rpc(
    method: str, work: Awaitable[T], metrics: Metrics, admission: Admission, model: Callable[[], str] = str
) -> T:
    """A call under rpc_scope: the response, or RpcFailure."""
    try:
        async with rpc_scope(method, metrics, admission, model):
            return await work
    finally:
        if inspect.iscoroutine(work):
            work.close()  # not awaited when refused: no "never awaited" warning
    raise AssertionError("unreachable: rpc_scope raises when the work did not return")


async def run_stream(
    method: str,
    items: AsyncIterator[T],
    metrics: Metrics,
    admission: Admission,
    model: Callable[[], str] = str,
    max_s: float | None = None,
) -> AsyncIterator[T]:
    """A server stream under rpc_scope: its messages, then the end or RpcFailure. A stream that
    runs past `max_s` (stream_max_s: it holds a slot) ends with DEADLINE_EXCEEDED."""
    async with contextlib.aclosing(items), rpc_scope(method, metrics, admission, model):
        ends = None if max_s is None else asyncio.get_running_loop().time() + max_s
        while True:
            if ends is not None and asyncio.get_running_loop().time() >= ends:  # messages made at once
                raise DeadlineExceeded(f"the stream ran past {max_s:g} s, the longest one may (stream_max_s)")
            limit = asyncio.timeout_at(ends)  # the wait for the next message, not its write
            try:
                async with limit:
                    item = await anext(items)
            except StopAsyncIteration:
                break
            except TimeoutError:
                if not limit.expired():
                    raise
                raise DeadlineExceeded(f"the stream ran past {max_s:g} s, the longest one may (stream_max_s)") from None
            yield item
