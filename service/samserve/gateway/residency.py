"""What the gateway believes each sam_decoder holds (samserve.triton.residency keeps the tensors
there): the facts of the embeddings it sent under their cache keys, no tensor. A click on an
image believed held sends its key alone. The belief is bounded as the decoder bounds what it
holds: by the byte budget read from the decoder's own config, least recently used out, an entry
counted at the bytes it takes there (float32), so a belief never outgrows the store. A wrong
belief (another Triton replica, a restart, several decoder instances) costs one more call."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

from samserve.contract import DECODER, ModelInfo
from samserve.core.embedding_codec import ImageEmbedding

HELD_BYTES_PER_VALUE = 4  # the CPU decoder holds float32 (the GPU adapter float16: half, so this errs low)


@dataclasses.dataclass
class _Held:
    entries: OrderedDict[str, tuple[ImageEmbedding, int]] = dataclasses.field(default_factory=OrderedDict)
    nbytes: int = 0


class ResidentBelief:
    def __init__(self) -> None:
        self._decoders: dict[str, _Held] = {}  # by the decoder's Triton name

    def _of(self, model: ModelInfo) -> _Held:
        return self._decoders.setdefault(model.triton(DECODER), _Held())

    def get(self, model: ModelInfo, key: str) -> ImageEmbedding | None:
        """The facts (embedding None) of the embedding believed held under `key`, or None."""
        held = self._of(model)
        found = held.entries.get(key)
        if found is None:
            return None
        held.entries.move_to_end(key)
        return found[0]

    def held(self, model: ModelInfo, key: str, entry: ImageEmbedding) -> None:
        """The decoder was sent `entry` under `key` (its tensor) or used the one it holds (facts
        only): believed held, the least recently used let go past the decoder's budget."""
        held = self._of(model)
        if key in held.entries:
            held.entries.move_to_end(key)
            return
        if entry.embedding is None:
            return  # facts alone were not sent: nothing is known to be held
        nbytes = HELD_BYTES_PER_VALUE * entry.embedding.size
        if nbytes > model.resident_bytes:
            return  # the decoder keeps none (budget 0) or not one this large
        held.entries[key] = (dataclasses.replace(entry, embedding=None), nbytes)
        held.nbytes += nbytes
        while held.nbytes > model.resident_bytes:
            _, (_, freed) = held.entries.popitem(last=False)
            held.nbytes -= freed

    def forget(self, model: ModelInfo, key: str) -> None:
        held = self._of(model)
        found = held.entries.pop(key, None)
        if found is not None:
            held.nbytes -= found[1]

    def count(self, model: ModelInfo) -> int:
        return len(self._of(model).entries)
