"""After the decoder answers NOT_RESIDENT the embedding is read again and sent labelled with
the model id and key of what was read, never those of the entry the gateway believed in (a
model swapped under the same name between the two must not be stored under the old key)."""

from __future__ import annotations

import asyncio

import numpy as np

from samserve.contract import ModelInfo, cache_key
from samserve.core.embedding_codec import ImageEmbedding
from samserve.core.preprocess import PREPROCESS_VERSION
from samserve.core.prompts import Prompt
from samserve.gateway.backends.triton import EmbeddingNotResident
from samserve.gateway.deadline import Deadline
from samserve.gateway.engine import SamEngine
from samserve.gateway.metrics import Metrics
from samserve.gateway.residency import ResidentBelief

MODEL = ModelInfo(
    "new-model", "vit_b", 64, np.zeros(3, np.float32), np.ones(3, np.float32), 0.0, resident_bytes=1 << 20
)
IMAGE_ID = "ab" * 32


class Decoder:
    """Records each call's model id, key and whether an embedding was sent; the first call
    (key alone) answers NOT_RESIDENT."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []

    async def decode(self, model, embedding, model_id, coords, labels, mask_input, has_mask, deadline_s, key=None):
        self.calls.append((model_id, key, embedding is not None))
        if embedding is None:
            raise EmbeddingNotResident("not resident")
        n = coords.shape[0]
        return np.zeros((n, 4, 16, 16), np.float32), np.zeros((n, 4), np.float32)


def test_the_resend_carries_the_id_and_key_of_the_entry_read_now():
    believed = ImageEmbedding(None, (40, 50), (51, 64), "old-model")  # held by the decoder, as believed
    read_now = ImageEmbedding(np.zeros((1, 256, 4, 4), np.float16), (40, 50), (51, 64), "new-model")
    engine = object.__new__(SamEngine)
    engine.triton = Decoder()
    engine.metrics = Metrics()
    engine.resident = ResidentBelief()

    async def embedding_by_id(image_id, deadline, model_name):
        assert image_id == IMAGE_ID
        return read_now

    engine.embedding_by_id = embedding_by_id
    prompts = [Prompt(points=np.array([[10.0, 12.0]]), labels=np.array([1]))]
    selected, entry = asyncio.run(engine._decode(prompts, believed, MODEL, True, Deadline(10), IMAGE_ID, None))
    assert entry is read_now and len(selected) == 1
    old_key = cache_key("old-model", PREPROCESS_VERSION, IMAGE_ID)
    new_key = cache_key("new-model", PREPROCESS_VERSION, IMAGE_ID)
    assert engine.triton.calls == [("old-model", old_key, False), ("new-model", new_key, True)]
    held = engine.resident.get(MODEL, new_key)  # believed held now: under the new key, without its tensor
    assert held.model_id == "new-model" and held.embedding is None
    assert engine.resident.get(MODEL, old_key) is None
