"""Image embeddings kept beside the decoder (inside sam_decoder's process), so that a click on an
image already sent needs only its cache key: no Redis read, no embedding on the wire (SAM 2's is
8 MiB as float16), no conversion. Least recently used first out, within a byte budget."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class ResidentEmbeddings:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[str, np.ndarray] = OrderedDict()
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> np.ndarray | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: str, value: np.ndarray) -> None:
        """Keeps `value` (the caller's copy: it is not copied again); an embedding larger than
        the whole budget is not kept."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.nbytes -= old.nbytes
        if value.nbytes > self.max_bytes:
            return
        while self._entries and self.nbytes + value.nbytes > self.max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.nbytes -= evicted.nbytes
        self._entries[key] = value
        self.nbytes += value.nbytes
