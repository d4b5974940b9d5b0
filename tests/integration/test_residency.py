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
    engine.resident.held(await engine.model(), key, entry)


def _decode_directly(url: str, key: str, embedding: np.ndarray | None = None, model_id: str | None = None):
    """sam_decoder called as the gateway calls it, one click at (10, 12)."""
    import tritonclient.grpc as tc

    from samserve.contract import model_id_tensor

    arrays = {
        "point_coords": np.array([[[[10, 12], [0, 0]]]], np.float32),
        "point_labels": np.array([[[1, -1]]], np.float32),
        "mask_input": np.zeros((1, 1, 1, 64, 64), np.float32),
        "has_mask_input": np.zeros((1, 1), np.float32),
        "embedding_key": model_id_tensor(key),
    }
    if embedding is not None:
        arrays["image_embeddings"] = embedding.astype(np.float16)
    if model_id is not None:
        arrays["model_id"] = model_id_tensor(model_id)
    inputs = []
    for name, arr in arrays.items():
        kind = {np.dtype(object): "BYTES", np.dtype(np.float16): "FP16"}.get(arr.dtype, "FP32")
        t = tc.InferInput(name, list(arr.shape), kind)
        t.set_data_from_numpy(arr)
        inputs.append(t)
    result = tc.InferenceServerClient(url).infer("sam_decoder", inputs)
    return result.as_numpy("low_res_masks")


def test_a_key_of_another_model_is_refused_by_the_decoder(triton_server):
    import tritonclient.grpc as tc

    with pytest.raises(tc.InferenceServerException, match="names an embedding of another model"):
        _decode_directly(triton_server.grpc_url, cache_key("vit_h-0123456789abcdef-cpu-fp32", "1", "ab" * 32))


def test_an_embedding_sent_is_the_one_used_and_replaces_the_one_held(triton_server, served_model_id):
    """Whoever sends a key with an embedding never gets another embedding held under that key,
    and the key alone then means the embedding sent last."""
    key = cache_key(served_model_id, PREPROCESS_VERSION, "cd" * 32)
    rng = np.random.default_rng(3)
    a, b = (rng.normal(0, 1, (1, 256, 16, 16)).astype(np.float32) for _ in range(2))
    url = triton_server.grpc_url
    with_a = _decode_directly(url, key, a, served_model_id)
    with_b = _decode_directly(url, key, b, served_model_id)
    assert not np.allclose(with_a, with_b)
    np.testing.assert_array_equal(_decode_directly(url, key, b, served_model_id), with_b)
    np.testing.assert_array_equal(_decode_directly(url, key, None, served_model_id), with_b)  # the key alone
