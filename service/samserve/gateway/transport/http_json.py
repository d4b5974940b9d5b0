"""samserve.v1 messages <-> JSON, by the proto3 JSON mapping (field names as in the .proto,
bytes as base64, enums by name) with 64-bit integers as JSON numbers (every one the API has
fits a double exactly: sizes, areas, boxes)."""

from __future__ import annotations

import json

from google.protobuf import json_format
from google.protobuf.message import Message

from samserve.core.errors import InvalidInput

# JSON structure in a body is counted before it is parsed: base64 has none of these bytes, so
# they bound the values a body can hold however it is spelt (a million points are refused in
# one pass of bytes.count, not after a million Python objects were made).
STRUCTURE_BYTES = (b",", b":", b"[", b"{")


def to_json(message: Message) -> dict:
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


def dumps(message: Message) -> bytes:
    return json.dumps(to_json(message), separators=(",", ":"), allow_nan=False).encode()


def structure_budget(max_prompts: int, max_points: int) -> int:
    """The most JSON structure (STRUCTURE_BYTES) a request within the limits needs: per point
    {"x":..,"y":..,"label":..} about 8, per prompt a box, a mask input and their keys."""
    return max_prompts * (8 * max_points + 48) + 1024


def parse(body: bytes | str, message: Message, budget: int, what: str = "request body") -> Message:
    """`body` (JSON text) into `message`; InvalidInput naming what is wrong. The structure is
    counted first (see STRUCTURE_BYTES), so parsing is bounded by `budget` values."""
    raw = body.encode() if isinstance(body, str) else body
    if not raw.strip():
        return message
    structure = sum(raw.count(b) for b in STRUCTURE_BYTES)
    if structure > budget:
        raise InvalidInput(
            f"{what}: {structure} JSON separators exceed the {budget} a request within the limits needs "
            "(prompts, points per prompt)"
        )
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInput(f"{what}: not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{what}: a JSON object is expected, got {type(value).__name__}")
    try:
        return json_format.ParseDict(value, message, max_recursion_depth=16)
    except json_format.ParseError as exc:
        raise InvalidInput(f"{what}: {exc}") from None
