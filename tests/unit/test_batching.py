"""Merging requests into model batches and splitting results back (python-backend models)."""

from __future__ import annotations

import numpy as np

from samserve.triton.batching import DecoderRequest, run_concatenated, run_decoder_batched


def test_run_concatenated_splits_back_in_order_with_bounded_batches():
    calls = []

    def run(x):
        calls.append(len(x))
        return x * 2

    inputs = [np.full((n, 2), i, np.float32) for i, n in enumerate([1, 3, 2])]
    outs = run_concatenated(inputs, run, max_batch=4)
    assert calls == [4, 2]
    for x, y in zip(inputs, outs, strict=True):
        np.testing.assert_array_equal(y, x * 2)


def request(emb_value: float, n_prompts: int, n_points: int) -> DecoderRequest:
    return DecoderRequest(
        np.full((1, 256, 2, 2), emb_value, np.float16),
        np.arange(n_prompts * n_points * 2, dtype=np.float32).reshape(n_prompts, n_points, 2),
        np.ones((n_prompts, n_points), np.float32),
        np.zeros((n_prompts, 1, 8, 8), np.float32),
        np.zeros(n_prompts, np.float32),
    )


def test_decoder_prompts_are_grouped_by_point_count_and_keep_their_embedding():
    calls = []

    def run(feed):
        calls.append(feed["point_coords"].shape)
        b = len(feed["point_coords"])
        # each output row identifies its prompt: embedding value and first coordinate
        masks = np.broadcast_to(feed["image_embeddings"][:, :1, :1, :1], (b, 4, 8, 8)).copy()
        ious = np.stack([feed["point_coords"][:, 0, 0]] * 4, axis=1)
        return masks, ious

    reqs = [request(1, 2, 3), request(2, 1, 2), request(3, 3, 3)]
    outs = run_decoder_batched(reqs, run, max_prompts=4)
    assert sorted(calls) == [(1, 2, 2), (1, 3, 2), (4, 3, 2)]  # 5 three-point prompts: 4 + 1
    for req, (masks, ious) in zip(reqs, outs, strict=True):
        assert masks.shape == (req.num_prompts, 4, 8, 8)
        assert np.all(masks == float(req.image_embeddings[0, 0, 0, 0]))
        np.testing.assert_array_equal(ious[:, 0], req.point_coords[:, 0, 0])
