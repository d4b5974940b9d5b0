"""Embeddings kept beside the decoder: a click on an image the decoder holds sends its key alone
(no Redis read, no embedding on the wire), with the same masks; a key the decoder does not hold
costs one more call, with the embedding read from Redis; a key of another model is refused."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import redis

from samserve.client import PromptSpec
from samserve.contract import cache_key
from samserve.core.preprocess import PREPROCESS_VERSION
from samserve.devtools.sample_images import png_image

CLICK = [PromptSpec(points=[(40, 50)], labels=[1]), PromptSpec(points=[(20, 30), (60, 20)], labels=[1, 0])]


def test_a_held_embedding_needs_no_redis_read_and_gives_the_same_masks(client, gateway, redis_server, triton_stats):
    image = png_image(180, 240, 8101)
    image_id = client.embed(image).image_id
    first = client.segment(image_id=image_id, prompts=CLICK)
    key = cache_key(client.embed(image).model_id, PREPROCESS_VERSION, image_id)
    r = redis.Redis.from_url(redis_server.url)
    assert r.delete(key) == 1  # the cache no longer has it: only the decoder does
    decoded = triton_stats.inferences("sam_decoder")
    again = client.segment(image_id=image_id, prompts=CLICK)
    assert triton_stats.inferences("sam_decoder") == decoded + 2  # two point counts, two decoder requests
    for a, b in zip(first.prompts, again.prompts, strict=True):
        np.testing.assert_array_equal(a.masks, b.masks)
        np.testing.assert_array_equal(a.iou_predictions, b.iou_predictions)


def test_a_key_the_decoder_does_not_hold_is_sent_again_with_its_embedding(client, gateway, triton_stats, caplog):
    """The gateway believes the decoder holds an embedding it never got (as after a Triton
    restart, an eviction, or another replica): the key-only call fails as NOT_RESIDENT, and the
    embedding is read from Redis and sent; the answer is the one of a gateway with no belief."""
    image = png_image(150, 200, 8102)
    embedded = client.embed(image)
    engine = gateway.gateway.engine
    key = cache_key(embedded.model_id, PREPROCESS_VERSION, embedded.image_id)
    entry = gateway.call(engine.embedding_by_id(embedded.image_id))
    gateway.call(_believe(engine, key, entry))
    decoded = triton_stats.inferences("sam_decoder")
    with caplog.at_level(logging.INFO, logger="samserve.gateway.backends.triton"):
        seg = client.segment(image_id=embedded.image_id, prompts=CLICK[:1])
    assert "the embedding is not kept there; sending it" in caplog.text
    assert triton_stats.inferences("sam_decoder") == decoded + 2  # the key alone, then with the embedding
    reference = client.segment(image=image, prompts=CLICK[:1])  # from the bytes: the embedding sent
    np.testing.assert_array_equal(seg.prompts[0].masks, reference.prompts[0].masks)


async def _believe(engine, key, entry):
    engine._held(key, entry)


def test_a_key_of_another_model_is_refused_by_the_decoder(triton_server, small_sam):
    import tritonclient.grpc as tc

    from samserve.contract import model_id_tensor

    c = tc.InferenceServerClient(triton_server.grpc_url)
    inputs = []
    arrays = {
        "point_coords": np.zeros((1, 1, 2, 2), np.float32),
        "point_labels": np.array([[[1, -1]]], np.float32),
        "mask_input": np.zeros((1, 1, 1, 64, 64), np.float32),
        "has_mask_input": np.zeros((1, 1), np.float32),
        "embedding_key": model_id_tensor(cache_key("vit_h-0123456789abcdef-cpu-fp32", "1", "ab" * 32)),
    }
    for name, arr in arrays.items():
        t = tc.InferInput(name, list(arr.shape), "BYTES" if arr.dtype == object else "FP32")
        t.set_data_from_numpy(arr)
        inputs.append(t)
    with pytest.raises(tc.InferenceServerException, match="names an embedding of another model"):
        c.infer("sam_decoder", inputs)
