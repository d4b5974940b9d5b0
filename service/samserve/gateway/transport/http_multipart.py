"""A multipart/form-data body read part by part as it arrives, by python-multipart's streaming
parser (the one Starlette's own form parsing uses). A part is in memory once it is complete and
while its reader holds it, and the next bytes are read only when the reader asks for the next
part: an upload of many images takes the memory of a few, whatever its size, and a reader that
stops asking stops the client's upload (TCP's flow control), not the server's memory."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from samserve.core.errors import InvalidInput

MAX_HEADER_BYTES = 16 * 1024  # a part's headers, all together


@dataclass
class Part:
    name: str
    filename: str | None  # None: a plain field, not a file
    data: bytes | None  # None: over max_part_bytes (its bytes were dropped as they came)
    size: int  # bytes received, kept or not


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart/form-data Content-Type, else None."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    return params.get(b"boundary") or None


class _Parts:
    """The parser's callbacks: completed parts queue up in `done`."""

    def __init__(self, max_part_bytes: int, max_parts: int) -> None:
        self.max_part_bytes = max_part_bytes
        self.max_parts = max_parts
        self.done: deque[Part] = deque()
        self.count = 0
        self.ended = False
        self._header_bytes = 0
        self._field = b""
        self._value = b""
        self._disposition = b""
        self._name = ""
        self._filename: str | None = None
        self._data = bytearray()
        self._size = 0

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.count += 1
        if self.count > self.max_parts:
            raise InvalidInput(f"multipart body: more than {self.max_parts} parts")
        self._header_bytes = 0
        self._disposition = b""
        self._data = bytearray()
        self._size = 0

    def _header(self, data: bytes, start: int, end: int) -> bytes:
        self._header_bytes += end - start
        if self._header_bytes > MAX_HEADER_BYTES:
            raise InvalidInput(f"multipart body: part {self.count}'s headers pass {MAX_HEADER_BYTES} bytes")
        return data[start:end]

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += self._header(data, start, end)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += self._header(data, start, end)

    def on_header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            self._disposition = self._value
        self._field = self._value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidInput(f"multipart body: part {self.count} has no Content-Disposition name")
        self._name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        self._filename = None if filename is None else filename.decode("utf-8", "replace")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        if self._size <= self.max_part_bytes:
            self._data += data[start:end]
        else:
            self._data = bytearray()  # over the limit: counted, not kept

    def on_part_end(self) -> None:
        kept = bytes(self._data) if self._size <= self.max_part_bytes else None
        self.done.append(Part(self._name, self._filename, kept, self._size))
        self._data = bytearray()

    def on_end(self) -> None:
        self.ended = True


async def parts(
    chunks: AsyncIterator[bytes], boundary: bytes, max_part_bytes: int, max_parts: int
) -> AsyncIterator[Part]:
    """The body's parts in order, each as soon as it is complete. A part over `max_part_bytes`
    comes with data None; more than `max_parts` parts, malformed multipart or a body that ends
    before its closing boundary: InvalidInput. Nothing after the closing boundary is read."""
    state = _Parts(max_part_bytes, max_parts)
    try:
        parser = MultipartParser(boundary, state.callbacks())
    except FormParserError as exc:
        raise InvalidInput(f"multipart body: {exc}") from None
    async for chunk in chunks:
        try:
            parser.write(chunk)
        except FormParserError as exc:
            raise InvalidInput(f"multipart body: not valid multipart/form-data ({exc})") from None
        while state.done:
            yield state.done.popleft()
        if state.ended:
            return  # what follows the closing boundary is not read (it could go on for ever)
    try:
        parser.finalize()
    except FormParserError as exc:
        raise InvalidInput(f"multipart body: not valid multipart/form-data ({exc})") from None
    while state.done:
        yield state.done.popleft()
    if not state.ended:
        raise InvalidInput("multipart body: it ended before its closing boundary")
