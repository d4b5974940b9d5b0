"""Embeddings kept beside the decoder: a click on an image the decoder holds sends its key alone
(no Redis read, no embedding on the wire), with the same masks; a key the decoder does not hold
costs one more call, with the embedding read from Redis; a key of another model is refused."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import redis

from samserve.client import PromptSpec
from samserve.contract import cache_key
from samserve.core.preprocess import PREPROCESS_VERSION
from samserve.devtools.sample_images import png_image
from samserve.gateway.deadline import Deadline

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
    entry = gateway.call(engine.embedding_by_id(embedded.image_id, Deadline(10)))
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


HELD = 3  # embeddings the decoder below holds
EMBEDDING_BYTES = 256 * 16 * 16 * 4  # the suite's model, held as float32


@pytest.fixture
def small_decoder_triton(model_repository, cache_dir, tmp_path):
    """The suite's repository with a decoder that holds HELD embeddings; the encoder's config
    keeps its own (large) figure, which must not be the one believed."""
    import shutil

    from samserve.devtools.local_servers import start_triton

    repo = tmp_path / "repo"
    shutil.copytree(model_repository, repo)
    config = repo / "sam_decoder" / "config.pbtxt"
    budget = 'key: "resident_embedding_bytes" value { string_value: "%s" }'
    text = config.read_text()
    assert budget % (512 << 20) in text
    config.write_text(text.replace(budget % (512 << 20), budget % (HELD * EMBEDDING_BYTES)))
    server = start_triton(repo, tmp_path / "triton.log", cache_dir)
    yield server
    server.stop()


def _decoder_calls(url: str) -> int:
    """sam_decoder's requests, answered or refused (a NOT_RESIDENT answer is a failed one)."""
    import tritonclient.grpc as tc

    client = tc.InferenceServerClient(url)

    def read() -> int:
        s = client.get_inference_statistics("sam_decoder").model_stats[0]
        return int(s.inference_stats.success.count) + int(s.inference_stats.fail.count)

    last = read()  # Triton counts a request after its response: read until the count holds still
    while True:
        time.sleep(0.15)
        now = read()
        if now == last:
            return now
        last = now


def _redis_gets(url: str) -> int:
    return int(redis.Redis.from_url(url).info("commandstats").get("cmdstat_get", {}).get("calls", 0))


def test_round_robin_clicks_cost_one_decoder_call_each_whether_or_not_the_images_fit(
    small_decoder_triton, redis_server
):
    """The gateway believes no more than the decoder's own budget holds: clicks round-robin over
    the HELD images that fit are one decoder call each with no Redis read, and over HELD + 1
    (least recently used out: every one a miss) still one call each, the embedding read and sent
    at once, never a key-only call answered NOT_RESIDENT first."""
    from samserve.client import SamClient
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings

    url = small_decoder_triton.grpc_url
    gw = GatewayThread(gateway_settings(small_decoder_triton.grpc_url, redis_server.url))
    try:
        with SamClient(gw.target, timeout_s=60) as c:
            ids = [c.embed(png_image(96, 128, 8200 + i)).image_id for i in range(HELD + 1)]

            def per_click(images: list[str], rounds: int = 3) -> tuple[float, float]:
                for image_id in images:  # warm: the decoder holds what fits
                    c.segment(image_id=image_id, prompts=CLICK[:1])
                calls, gets = _decoder_calls(url), _redis_gets(redis_server.url)
                for _ in range(rounds):
                    for image_id in images:
                        c.segment(image_id=image_id, prompts=CLICK[:1])
                clicks = rounds * len(images)
                return (
                    (_decoder_calls(url) - calls) / clicks,
                    (_redis_gets(redis_server.url) - gets) / clicks,
                )

            fit_calls, fit_reads = per_click(ids[:HELD])
            over_calls, over_reads = per_click(ids)
    finally:
        gw.stop()
    print(f"decoder calls a click: {fit_calls:.2f} over {HELD} images, {over_calls:.2f} over {HELD + 1}")
    assert (fit_calls, fit_reads) == (1.0, 0.0)
    assert over_calls == 1.0 and over_reads >= 1.0
