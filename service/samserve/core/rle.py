"""Run-length encodings of binary masks, compatible with pycocotools.

Uncompressed RLE: run lengths over the column-major (Fortran-order) flattening, starting
with a run of zeros (possibly empty) -- what `segment_anything.utils.amg.mask_to_rle_pytorch`
produces. COCO RLE: the same counts in pycocotools' compressed string form (rleToString)."""

from __future__ import annotations

import numpy as np


def mask_to_counts(mask: np.ndarray) -> list[int]:
    """(H, W) bool -> run lengths, column-major, first run counts zeros."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    if flat.size == 0:
        return [0]
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def counts_to_mask(counts, height: int, width: int) -> np.ndarray:
    """Inverse of mask_to_counts (a list or an integer array) -> (H, W) bool, column-major in
    memory (a view of the flat runs, no transposing copy). Counts that are negative or do not
    sum to H * W are a ValueError."""
    c = np.asarray(counts, dtype=np.int64)
    if c.ndim != 1 or (c.size and (c.min() < 0 or c.max() > height * width)):
        raise ValueError(f"RLE counts must be a list of integers from 0 to {height * width}")
    if int(c.sum()) != height * width:
        raise ValueError(f"RLE counts sum to {int(c.sum())}, expected {height * width}")
    values = np.zeros(c.size, dtype=bool)
    values[1::2] = True
    return np.repeat(values, c).reshape((height, width), order="F")


def counts_to_string(counts: list[int]) -> str:
    """pycocotools rleToString: LEB128-like, 5 bits per char, deltas against counts[i-2];
    vectorised over counts (noisy masks have hundreds of thousands of runs)."""
    c = np.asarray(counts, dtype=np.int64)
    if c.size == 0:
        return ""
    x = c.copy()
    x[3:] -= c[1:-2]
    chars = np.zeros((c.size, 13), dtype=np.uint8)  # 64-bit values need at most 13 chunks
    n_chunks = np.zeros(c.size, dtype=np.int64)
    active = np.ones(c.size, dtype=bool)
    for k in range(13):
        chunk = x & 0x1F
        x >>= 5  # arithmetic shift: negative deltas end in -1
        more = np.where(chunk & 0x10, x != -1, x != 0)
        chars[:, k] = (chunk | (more.astype(np.int64) << 5)) + 48
        n_chunks += active
        active &= more
        if not active.any():
            break
    return chars[np.arange(13)[None, :] < n_chunks[:, None]].tobytes().decode("ascii")


def string_to_counts(s: str) -> np.ndarray:
    """pycocotools rleFrString (int64 counts), vectorised: 5-bit chunks, sign from the last chunk, deltas
    against counts[i-2] (each parity is its own running sum). A string that ends inside a
    value, or holds characters outside '0'..'o', is a ValueError."""
    data = np.frombuffer(s.encode("ascii"), dtype=np.uint8).astype(np.int64) - 48
    if data.size == 0:
        return np.zeros(0, dtype=np.int64)
    if data.min() < 0 or data.max() > 63 or data[-1] & 0x20:
        raise ValueError("not a COCO RLE counts string")
    last = (data & 0x20) == 0  # the final chunk of each value
    ends = np.flatnonzero(last)
    if ends.size == data.size:  # every value one chunk (most of a speckled mask's)
        x = np.where(data & 0x10, (data & 0x1F) - 32, data & 0x1F)
    else:
        starts = np.zeros_like(ends)
        starts[1:] = ends[:-1] + 1
        value = np.zeros(data.size, dtype=np.int64)  # which value each chunk belongs to
        np.cumsum(last[:-1], out=value[1:])
        position = np.arange(data.size) - starts[value]
        if position.max() > 11:  # no count of a mask comes near 60 bits
            raise ValueError("not a COCO RLE counts string: a value of more than 60 bits")
        x = np.add.reduceat((data & 0x1F) << (5 * position), starts)
        negative = (data[ends] & 0x10) != 0
        x[negative] -= np.left_shift(1, 5 * (ends - starts + 1)[negative])
    counts = x.copy()
    counts[1::2] = np.cumsum(x[1::2])  # c[i] = x[i] + c[i-2] for i > 2
    counts[2::2] = np.cumsum(x[2::2])
    return counts


def mask_to_coco_rle(mask: np.ndarray) -> dict:
    """(H, W) bool -> {"size": [H, W], "counts": str}, as pycocotools.mask.encode (counts decoded to str)."""
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(mask_to_counts(mask))}


def coco_rle_to_mask(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, (bytes, str)):
        counts = string_to_counts(counts.decode() if isinstance(counts, bytes) else counts)
    return counts_to_mask(counts, h, w)
