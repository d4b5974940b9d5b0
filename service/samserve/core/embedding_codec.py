"""The embedding cache's value format (the key is samserve.contract.cache_key).

Value: MAGIC | u32 header length | JSON header | float16 payload. The header carries shape,
dtype, original and resized size, model id and a CRC32 of the payload; anything that does not
check out raises CorruptEntry, which the caller treats as a miss."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

import numpy as np

MAGIC = b"SSEMB\x01"
_LEN = struct.Struct("<I")


class CorruptEntry(ValueError):
    pass


@dataclass(frozen=True)
class ImageEmbedding:
    """embedding (1, 256, S/16, S/16) float16; sizes are (height, width)."""

    embedding: np.ndarray
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    model_id: str


def encode_entry(entry: ImageEmbedding) -> bytes:
    payload = np.ascontiguousarray(entry.embedding, dtype=np.float16).tobytes()
    header = json.dumps(
        {
            "shape": list(entry.embedding.shape),
            "dtype": "float16",
            "original_size": list(entry.original_size),
            "input_size": list(entry.input_size),
            "model_id": entry.model_id,
            "crc32": zlib.crc32(payload),
        },
        separators=(",", ":"),
    ).encode()
    return MAGIC + _LEN.pack(len(header)) + header + payload


def decode_entry(value: bytes, model_id: str) -> ImageEmbedding:
    try:
        if not value.startswith(MAGIC):
            raise CorruptEntry("bad magic")
        (n,) = _LEN.unpack_from(value, len(MAGIC))
        start = len(MAGIC) + _LEN.size
        header = json.loads(value[start : start + n])
        payload = value[start + n :]
        shape = tuple(int(d) for d in header["shape"])
        if header["dtype"] != "float16" or len(shape) != 4:
            raise CorruptEntry(f"unexpected dtype/shape {header['dtype']} {shape}")
        if len(payload) != 2 * int(np.prod(shape)):
            raise CorruptEntry("payload length does not match the shape")
        if zlib.crc32(payload) != header["crc32"]:
            raise CorruptEntry("checksum mismatch")
        if header["model_id"] != model_id:
            raise CorruptEntry("entry of another model")
        emb = np.frombuffer(payload, dtype=np.float16).reshape(shape)
        oh, ow = (int(v) for v in header["original_size"])
        ih, iw = (int(v) for v in header["input_size"])
        return ImageEmbedding(emb, (oh, ow), (ih, iw), model_id)
    except CorruptEntry:
        raise
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise CorruptEntry(f"unreadable entry: {exc}") from None
