"""samserve.v1 over HTTP/JSON (Starlette): every RPC on the shared RPCs (transport/rpcs.py)
under run_rpc, so validation, limits, results and messages are gRPC's; gRPC statuses become
HTTP codes as Google's APIs map them. Plus /v1/health, /openapi.json and the page at /."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from samserve.core.errors import Cancelled, InvalidInput, RequestTimeout, RequestTooLarge, SamServeError
from samserve.gateway.deadline import Deadline
from samserve.gateway.engine import SamEngine
from samserve.gateway.metrics import Metrics
from samserve.gateway.request_id import CLIENT
from samserve.gateway.settings import Settings
from samserve.gateway.transport import http_json, http_multipart, openapi
from samserve.gateway.transport.health import HealthWatch
from samserve.gateway.transport.http_edge import BodyTooLarge, BodyTooSlow, ClientStalled, HttpEdge, error_body
from samserve.gateway.transport.rpcs import Rpcs
from samserve.gateway.transport.status import Admission, RpcFailure, run_rpc, run_stream, status_of
from samserve.gateway.transport.video_rpcs import VideoRpcs
from samserve.v1 import samserve_pb2 as pb

log = logging.getLogger(__name__)
T = TypeVar("T")
WEB = Path(__file__).with_name("web")
C = grpc.StatusCode
HTTP_STATUS = {  # google.rpc.Code -> HTTP, as Google's HTTP APIs and grpc-gateway map them
    C.OK: 200,
    C.CANCELLED: 499,
    C.UNKNOWN: 500,
    C.INVALID_ARGUMENT: 400,
    C.DEADLINE_EXCEEDED: 504,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.PERMISSION_DENIED: 403,
    C.UNAUTHENTICATED: 401,
    C.RESOURCE_EXHAUSTED: 429,
    C.FAILED_PRECONDITION: 400,
    C.ABORTED: 409,
    C.OUT_OF_RANGE: 400,
    C.UNIMPLEMENTED: 501,
    C.INTERNAL: 500,
    C.UNAVAILABLE: 503,
    C.DATA_LOSS: 500,
}
TIMEOUT_HEADER = "x-request-timeout"


class NdjsonResponse(StreamingResponse):
    """A stream of lines whose generator is closed however the response ends (the client gone,
    or stalled and cut off by the edge): its RPC's slot is freed then, not when it is collected.
    watch_disconnect=False: no listener reads the request meanwhile (the lines read the body as
    they go, and watch for the client leaving themselves). `cleanup` runs after, however it
    ended: the lines may never have started (their own `finally` then never runs)."""

    def __init__(
        self, lines, watch_disconnect: bool = True, cleanup: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(lines, media_type="application/x-ndjson")
        self.watch_disconnect = watch_disconnect
        self.cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            if self.watch_disconnect:
                await super().__call__(scope, receive, send)
            else:
                await self.stream_response(send)
        finally:
            await self.body_iterator.aclose()
            if self.cleanup is not None:
                await self.cleanup()


class _Upload:
    """An EmbedMany body being received: its upload slot, left once when the body is in (or
    when it fails, or the answer ends first); then a watch for the client leaving (`gone`)."""

    def __init__(self, leave: Callable[[], None]) -> None:
        self._leave: Callable[[], None] | None = leave
        self._watch: asyncio.Future | None = None
        self.gone = asyncio.Event()

    def received(self, request: Request) -> None:
        self._watch = asyncio.ensure_future(self._until_gone(request))

    async def _until_gone(self, request: Request) -> None:
        await _disconnected(request)
        self.gone.set()

    def ended(self) -> None:
        if self._leave is not None:
            leave, self._leave = self._leave, None
            leave()

    def close(self) -> None:
        self.ended()
        if self._watch is not None:
            self._watch.cancel()


async def _refuse(exc: SamServeError):
    raise exc


def max_body_bytes(settings: Settings) -> int:
    """The largest HTTP body: a gRPC request of the limit, base64-encoded in JSON, plus room."""
    return math.ceil(settings.max_request_bytes * 4 / 3) + (1 << 20)


def _failure(failure: RpcFailure) -> Response:
    """gRPC's status as HTTP's; 413 for a request over the limit, 408 for a body not sent in
    time; Retry-After only where retrying can help (over capacity now, Triton away)."""
    http = HTTP_STATUS.get(failure.code, 500)
    if issubclass(failure.kind, RequestTooLarge):
        http = 413
    elif issubclass(failure.kind, RequestTimeout):
        http = 408
    headers = {"retry-after": "1"} if failure.retryable else None
    body = error_body(http, failure.code.name, failure.message)
    return Response(body, http, headers, media_type="application/json")


def _deadline(request: Request) -> Deadline:
    text = request.headers.get(TIMEOUT_HEADER)
    if text is None:
        return Deadline(None)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidInput(f"header X-Request-Timeout: a positive number of seconds, got {text[:32]!r}")
    return Deadline(seconds)


class HttpApi:
    def __init__(
        self,
        rpcs: Rpcs,
        engine: SamEngine,
        settings: Settings,
        metrics: Metrics,
        admission: Admission,
        health: HealthWatch,
        video: VideoRpcs | None = None,
    ) -> None:
        self.rpcs = rpcs
        self.video = video
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.admission = admission
        # bodies are received outside the request slots, under their own: a slow upload does
        # not keep out requests that are ready to run
        self.uploads = Admission(settings.max_concurrent_uploads, settings.max_requests_per_client, "uploads")
        self.health = health
        self.max_body = max_body_bytes(settings)
        self.budget = http_json.structure_budget(settings.max_prompts_per_request, settings.max_points_per_prompt)
        self.schema = openapi.document(auth=bool(settings.auth_tokens))

    def app(self) -> HttpEdge:
        routes = [
            Route(path, self._endpoint(rpc, method), methods=[method.upper()])
            for path, (rpc, method, _) in openapi.ROUTES.items()
        ]
        if self.video is not None:
            routes += [
                Route(path, self._json_endpoint(rpc, getattr(pb, request), getattr(self.video, rpc)), methods=["POST"])
                for path, (rpc, _, request, _) in openapi.VIDEO_ROUTES.items()
            ]
            routes += [
                Route(openapi.VIDEO_ADD_FRAMES, self._video_add_frames, methods=["POST"]),
                Route(openapi.VIDEO_PROPAGATE, self._video_propagate, methods=["POST"]),
            ]
        routes += [
            Route(openapi.EMBED_MANY, self._embed_many, methods=["POST"]),
            Route(openapi.GENERATE_STREAM, self._generate_masks_stream, methods=["POST"]),
            Route("/v1/health", self._health, methods=["GET"]),
            Route("/openapi.json", self._openapi, methods=["GET"]),
            Route("/", self._page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=WEB)),
        ]
        known = {r.path for r in routes if isinstance(r, Route)}
        app = Starlette(routes=routes, exception_handlers={Exception: _unexpected, HTTPException: _http_error})
        s = self.settings
        return HttpEdge(
            app,
            self.metrics,
            known,
            self.max_body,
            s.tokens(),
            s.stream_idle_timeout_s,
            s.http_min_body_rate,
            streamed=frozenset({openapi.EMBED_MANY, openapi.VIDEO_ADD_FRAMES}),
        )

    async def _page(self, request: Request) -> Response:
        return FileResponse(WEB / "index.html", headers={"cache-control": "no-cache"})

    async def _openapi(self, request: Request) -> Response:
        return JSONResponse(self.schema)

    async def _health(self, request: Request) -> Response:
        if self.health.ready:
            return JSONResponse({"status": "SERVING"}, 200)
        return JSONResponse({"status": "NOT_SERVING", "reason": self.engine.not_ready or "not ready"}, 503)

    async def _message(self, request: Request, cls: type[Message]) -> Message:
        """The request's message from a JSON body, or from a multipart form: the file `image`
        and, optionally, `request` (the other fields as JSON). The body must arrive within
        http_read_timeout_s; it is parsed on the CPU threads, not the event loop."""
        return await self._received(self._read(request, cls))

    async def _received(self, reading: Awaitable[T]) -> T:
        """`reading` (of the body) within http_read_timeout_s; the edge's and the client's
        interruptions as the project's errors (408, 413, 499)."""
        with self._body_errors():
            try:
                return await asyncio.wait_for(reading, self.settings.http_read_timeout_s)
            except TimeoutError:
                limit = self.settings.http_read_timeout_s
                raise RequestTimeout(f"request body: not received within {limit:g} s") from None

    @contextlib.contextmanager
    def _body_errors(self):
        """The edge's and the client's interruptions of a body as the project's errors."""
        try:
            yield
        except BodyTooLarge:
            raise RequestTooLarge(f"request body: over the limit of {self.max_body} bytes") from None
        except BodyTooSlow:
            rate = self.settings.http_min_body_rate
            raise RequestTimeout(f"request body: arriving at under {rate} bytes/s (http_min_body_rate)") from None
        except ClientDisconnect:
            raise Cancelled("the client closed the connection while sending the request") from None

    async def _read(self, request: Request, cls: type[Message]) -> Message:
        message = cls()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        uploads = "image" in cls.DESCRIPTOR.fields_by_name
        if content_type == "multipart/form-data" and uploads:
            return await self._form(request, message)
        body = await request.body()  # GET too: its body is read (and bounded), then ignored
        if request.method == "GET":
            return message
        if content_type not in ("application/json", ""):
            raise InvalidInput(
                f"Content-Type {content_type!r}: send application/json" + (" or multipart/form-data" if uploads else "")
            )
        return await self.engine.run_cpu(http_json.parse, body, message, self.budget)

    async def _upload(self, request: Request, rpc: str, cls: type[Message]) -> Response | None:
        """Receives the request's body (parsing a multipart form, whose files spool to disk) under
        an upload slot, before the RPC takes a request slot; the refusal's answer, or None. The
        route closes the request (its form's files)."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            with self.uploads.slot():
                if content_type == "multipart/form-data" and "image" in cls.DESCRIPTOR.fields_by_name:
                    await self._received(self._parsed_form(request))
                else:
                    await self._received(request.body())
        except SamServeError as exc:
            failure = RpcFailure(status_of(exc), str(exc), type(exc))
            self.metrics.requests.labels(rpc, failure.code.name, "").inc()
            log.warning("HTTP %s: the body: %s: %s", rpc, failure.code.name, failure.message)
            return _failure(failure)
        return None

    async def _parsed_form(self, request: Request) -> FormData:
        """Starlette's form of the request (parsed once, then kept on the request)."""
        try:
            return await request.form(max_files=2, max_fields=1, max_part_size=self.max_body)
        except MultiPartException as exc:
            raise InvalidInput(f"multipart body: {exc.message}") from None
        except HTTPException as exc:  # Starlette's wrapping of the parser's errors
            raise InvalidInput(f"multipart body: {exc.detail}") from None

    async def _open_form(self, request: Request, message: Message) -> FormData:
        """The multipart form: 'image' part(s) and optionally 'request' (the message's other
        fields as JSON, read into `message`). The caller closes the form."""
        form = await self._parsed_form(request)
        try:
            extra = sorted(set(form.keys()) - {"image", "request"})
            if extra:
                raise InvalidInput(f"multipart body: unknown parts {extra}; send 'image' and optionally 'request'")
            fields = form.get("request")
            if isinstance(fields, UploadFile):  # curl -F request=@fields.json
                fields = (await fields.read()).decode("utf-8", "replace")
            what = "multipart part 'request'"
            await self.engine.run_cpu(http_json.parse, fields or "", message, self.budget, what)
        except BaseException:
            await form.close()
            raise
        return form

    async def _form(self, request: Request, message: Message) -> Message:
        form = await self._open_form(request, message)
        try:
            if len(form.getlist("image")) > 1:
                raise InvalidInput("multipart body: one part named 'image', got several")
            image = form.get("image")
            if not isinstance(image, UploadFile):
                raise InvalidInput("multipart body: a file part named 'image' is required")
            if {f.name for f, _ in message.ListFields()} & {"image", "image_id"}:
                raise InvalidInput("multipart body: the image is the upload; 'request' sets no image or image_id")
            message.image = await image.read()
        finally:
            await form.close()
        return message

    async def _generate_masks_stream(self, request: Request) -> Response:
        """GenerateMasksStream as NDJSON: a GenerateMasksResponse per line. An error before
        the first chunk is the usual JSON error and status; one after it ends the stream
        with an {"error": ...} line."""
        return await self._ndjson(
            request,
            "GenerateMasksStream",
            pb.GenerateMasksRequest,
            self.rpcs.generate_masks_stream,
            self.settings.stream_max_s,
        )

    async def _ndjson(self, request: Request, rpc: str, cls: type[Message], items, max_s: float | None) -> Response:
        """A server-streaming RPC as NDJSON: items(message, deadline)'s messages, one a line."""
        parsed: list[Message] = []

        async def chunks():
            message = await self._message(request, cls)
            parsed.append(message)
            deadline = _deadline(request)
            self._check_size(message)
            yield None  # the body is read: from here a disconnect can be watched for
            async with contextlib.aclosing(items(message, deadline)) as inner:
                async for chunk in inner:
                    yield chunk

        refused = await self._upload(request, rpc, cls)
        if refused is not None:
            await request.close()
            return refused
        label = self._label(parsed, cls) if "model" in cls.DESCRIPTOR.fields_by_name else str
        stream = run_stream(rpc, chunks(), self.metrics, self.admission, label, max_s)
        try:
            await anext(stream)  # reads the body (the disconnect watcher would take its messages)
            first = await _unless_disconnected(request, anext(stream))
        except RpcFailure as failure:
            await request.close()
            return _failure(failure)
        except Cancelled:
            await request.close()
            return _failure(RpcFailure(C.CANCELLED, "the client closed the connection", Cancelled))
        except StopAsyncIteration:
            await request.close()
            return NdjsonResponse(_nothing(), cleanup=stream.aclose)

        async def lines():
            async with contextlib.aclosing(stream):  # a client gone mid-stream stops the rest
                yield await self.engine.run_cpu(http_json.dumps, first) + b"\n"
                try:
                    async for chunk in stream:
                        yield await self.engine.run_cpu(http_json.dumps, chunk) + b"\n"
                except RpcFailure as failure:
                    yield error_body(HTTP_STATUS.get(failure.code, 500), failure.code.name, failure.message) + b"\n"

        return NdjsonResponse(lines(), cleanup=stream.aclose)

    async def _embed_many(self, request: Request) -> Response:
        """EmbedMany: a multipart upload of `image` parts (after an optional `request` part: the
        other EmbedRequest fields for all), answered as NDJSON, a line per image in order. The
        parts are read as the window takes them (http_multipart), so the upload's memory is a
        few images whatever its size; each image is held to gRPC's message limit
        (max_request_bytes: RESOURCE_EXHAUSTED for that image alone). An error before the first
        line is the usual JSON error and status; one after it ends the stream with an
        {"error": ...} line."""
        boundary = http_multipart.boundary_of(request.headers.get("content-type", ""))
        client = CLIENT.get()
        try:
            if boundary is None:
                raise InvalidInput("EmbedMany: send multipart/form-data, the images as parts named 'image'")
            deadline = _deadline(request)
            self.uploads.enter(client)  # until the body is in
        except SamServeError as exc:
            return _failure(RpcFailure(status_of(exc), str(exc), type(exc)))
        upload = _Upload(lambda: self.uploads.leave(client))
        too_large: dict[int, int] = {}  # id() of an image's request -> its size, over the limit

        def run(work, one):
            size = too_large.pop(id(one), None)
            if size is not None:
                work.close()  # never started
                limit = self.settings.max_request_bytes
                work = _refuse(RequestTooLarge(f"image: {size} bytes, over the limit of {limit} (max_request_bytes)"))
            return run_rpc("EmbedMany", work, self.metrics, self.admission, self.rpcs.model_label(one))

        results = self.rpcs.embed_many(self._embed_requests(request, boundary, upload, too_large), deadline, run)
        try:
            first = await anext(results)  # an error before it is the answer's status
        except SamServeError as exc:
            await results.aclose()
            upload.close()
            return _failure(RpcFailure(status_of(exc), str(exc), type(exc)))

        async def lines():
            try:
                async with contextlib.aclosing(results):
                    yield await self.engine.run_cpu(http_json.dumps, first) + b"\n"
                    async for result in results:
                        yield await self.engine.run_cpu(http_json.dumps, result) + b"\n"
                        if upload.gone.is_set():
                            return  # the client left after its upload: the rest is for nobody
            except SamServeError as exc:
                failure = RpcFailure(status_of(exc), str(exc), type(exc))
                yield error_body(HTTP_STATUS.get(failure.code, 500), failure.code.name, failure.message) + b"\n"
            finally:
                upload.close()

        async def cleanup() -> None:
            await results.aclose()
            upload.close()

        # the body is read by `lines` itself, so no listener may take its messages
        return NdjsonResponse(lines(), watch_disconnect=False, cleanup=cleanup)

    async def _embed_requests(
        self, request: Request, boundary: bytes, upload: _Upload, too_large: dict[int, int]
    ) -> AsyncIterator[pb.EmbedRequest]:
        """EmbedMany's requests, one an 'image' part, as the parts arrive; an image over
        max_request_bytes is noted in `too_large` (by its request's id()). Leaves the upload's
        slot when the body is in or fails."""
        limit, max_bytes = self.settings.embed_many_max_images, self.settings.max_request_bytes
        fields = pb.EmbedRequest()
        images, seen_request = 0, False
        try:
            body = http_multipart.parts(self._chunks(request), boundary, max_bytes, limit + 1)
            async with contextlib.aclosing(body):
                async for part in body:
                    if part.name == "request" and not images and not seen_request:
                        seen_request = True
                        if part.data is None:
                            raise RequestTooLarge(f"multipart part 'request': over the limit of {max_bytes} bytes")
                        what = "multipart part 'request'"
                        await self.engine.run_cpu(
                            http_json.parse, part.data.decode("utf-8", "replace"), fields, self.budget, what
                        )
                        if fields.image:
                            raise InvalidInput("multipart body: the images are the 'image' parts; 'request' sets none")
                        continue
                    if part.name != "image" or part.filename is None:
                        raise InvalidInput(
                            f"multipart body: part {part.name!r} where file parts named 'image' were expected "
                            "(after one optional 'request' part)"
                        )
                    images += 1
                    if images > limit:
                        raise InvalidInput(f"multipart body: more than {limit} images; at most {limit} a request")
                    one = pb.EmbedRequest()
                    one.CopyFrom(fields)
                    one.image = part.data or b""
                    if part.data is None or one.ByteSize() > max_bytes:
                        too_large[id(one)] = part.size if part.data is None else one.ByteSize()
                    yield one
            if not images:
                raise InvalidInput("multipart body: file parts named 'image' are required")
            upload.received(request)
        finally:
            upload.ended()

    async def _chunks(self, request: Request) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; its interruptions as the project's errors."""
        with self._body_errors():
            async for chunk in request.stream():
                if chunk:
                    yield chunk

    def _check_size(self, message: Message) -> None:
        """gRPC's receive limit, on the message the body became."""
        if message.ByteSize() > self.settings.max_request_bytes:
            size = message.ByteSize()
            raise RequestTooLarge(f"request: {size} bytes, over the limit of {self.settings.max_request_bytes}")

    def _label(self, parsed: list[Message], cls: type[Message]) -> Callable[[], str]:
        """The metrics' model label of the message parsed into `parsed` (none parsed: none named)."""
        return lambda: self.rpcs.model_label(parsed[0] if parsed else cls())()

    def _endpoint(self, rpc: str, method: str):
        return self._json_endpoint(rpc, getattr(pb, f"{rpc}Request"), getattr(self.rpcs, rpc))

    def _json_endpoint(self, rpc: str, cls: type[Message], call):
        async def work(request: Request, parsed: list[Message]):
            # the body was received (under an upload slot); parsing it is the RPC's work
            message = await self._message(request, cls)
            parsed.append(message)
            deadline = _deadline(request)
            self._check_size(message)
            return await _unless_disconnected(request, call(message, deadline))

        async def endpoint(request: Request) -> Response:
            parsed: list[Message] = []
            try:
                refused = await self._upload(request, rpc, cls)
                if refused is not None:
                    return refused
                response = await run_rpc(
                    rpc, work(request, parsed), self.metrics, self.admission, self._label(parsed, cls)
                )
            except RpcFailure as failure:
                return _failure(failure)
            finally:
                await request.close()  # the form's spooled files
            body = await self.engine.run_cpu(http_json.dumps, response)
            return Response(body, 200, media_type="application/json")

        endpoint.__name__ = rpc
        return endpoint

    async def _video_propagate(self, request: Request) -> Response:
        """Propagate as NDJSON: a VideoFrameResult per line as each frame is tracked. An error
        before the first line is the usual JSON error and status; one after it ends the stream
        with an {"error": ...} line. A client that disconnects stops the tracking."""
        assert self.video is not None
        video = self.video
        return await self._ndjson(
            request, "Propagate", pb.PropagateRequest, lambda m, d: video.Propagate(m, d), max_s=None
        )

    async def _video_add_frames(self, request: Request) -> Response:
        """AddFrames: a multipart upload, a 'request' part ({"session_id": ...}) then the frames
        as file parts named 'image', in order, each read and embedded as it arrives (each held
        to max_request_bytes, at most video_max_frames)."""
        assert self.video is not None
        boundary = http_multipart.boundary_of(request.headers.get("content-type", ""))
        max_bytes, max_parts = self.settings.max_request_bytes, self.settings.video_max_frames + 1

        async def messages() -> AsyncIterator[pb.AddFramesRequest]:
            if boundary is None:
                raise InvalidInput("AddFrames: send multipart/form-data: a 'request' part, then 'image' parts")
            body = http_multipart.parts(self._chunks(request), boundary, max_bytes, max_parts)
            first = True
            async with contextlib.aclosing(body):
                async for part in body:
                    if part.data is None:
                        raise RequestTooLarge(f"multipart part {part.name!r}: over the limit of {max_bytes} bytes")
                    if first:
                        if part.name != "request":
                            raise InvalidInput(
                                "multipart body: the first part must be 'request' ({\"session_id\": ...})"
                            )
                        message = pb.AddFramesRequest()
                        what = "multipart part 'request'"
                        text = part.data.decode("utf-8", "replace")
                        await self.engine.run_cpu(http_json.parse, text, message, self.budget, what)
                        first = False
                        yield message
                        continue
                    if part.name != "image" or part.filename is None:
                        raise InvalidInput(
                            f"multipart body: part {part.name!r} where file parts named 'image' were expected"
                        )
                    yield pb.AddFramesRequest(image=part.data)

        try:
            response = await run_rpc(
                "AddFrames", self.video.AddFrames(messages(), _deadline(request)), self.metrics, self.admission
            )
        except RpcFailure as failure:
            return _failure(failure)
        body = await self.engine.run_cpu(http_json.dumps, response)
        return Response(body, 200, media_type="application/json")


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # an async generator of no lines


async def _unless_disconnected(request: Request, work):
    """`work`'s result; Cancelled (and `work` cancelled) when the client goes first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():  # the client left (or the server stops): the work stops
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if task.cancelled():
        raise Cancelled("the client closed the connection")
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read: the next message is the disconnect)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return
    except Exception:  # cannot tell: never report a disconnect that was not seen
        await asyncio.Future()


async def _http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's own answers (no such route, a method not allowed) as the API's errors."""
    status = {404: C.NOT_FOUND, 405: C.UNIMPLEMENTED, 400: C.INVALID_ARGUMENT}.get(exc.status_code, C.UNKNOWN)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    body = error_body(exc.status_code, status.name, message)
    return Response(body, exc.status_code, exc.headers, media_type="application/json")


async def _unexpected(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ClientStalled):  # the edge cut a client off: said there, no error of ours
        return Response(status_code=499)
    request_id = uuid.uuid4().hex[:12]
    log.error(
        "HTTP %s %s (request id %s) failed unexpectedly", request.method, request.url.path, request_id, exc_info=exc
    )
    return _failure(RpcFailure(C.INTERNAL, f"internal error (request id {request_id})"))
