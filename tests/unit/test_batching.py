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


def test_broadcast_runs_hold_one_request_and_its_embedding_once():
    calls = []

    def run(feed):
        calls.append((feed["image_embeddings"].shape[0], feed["point_coords"].shape))
        b = len(feed["point_coords"])
        masks = np.broadcast_to(feed["image_embeddings"][:, :1, :1, :1], (b, 4, 8, 8)).copy()
        ious = np.stack([feed["point_coords"][:, 0, 0]] * 4, axis=1)
        return masks, ious

    reqs = [request(1, 2, 3), request(2, 1, 2), request(3, 3, 3), request(4, 2, 3)]
    outs = run_decoder_batched(reqs, run, max_prompts=2, broadcast_image=True)
    # one embedding a run; the three-point prompts of requests 1, 3, 4 never share a run
    assert sorted(calls) == [(1, (1, 2, 2)), (1, (1, 3, 2)), (1, (2, 3, 2)), (1, (2, 3, 2)), (1, (2, 3, 2))]
    for req, (masks, ious) in zip(reqs, outs, strict=True):
        assert np.all(masks == float(req.image_embeddings[0, 0, 0, 0]))
        np.testing.assert_array_equal(ious[:, 0], req.point_coords[:, 0, 0])


def test_prompts_without_a_mask_go_to_the_no_mask_network():
    seen = {"full": [], "nomask": []}

    def runner(kind):
        def run(feed):
            seen[kind].append(sorted(feed))
            b = len(feed["point_coords"])
            masks = np.broadcast_to(feed["image_embeddings"][:, :1, :1, :1], (b, 4, 8, 8)).copy()
            return masks, np.stack([feed["point_coords"][:, 0, 0]] * 4, axis=1)

        return run

    req = request(5, 4, 2)
    has = np.array([0, 1, 0, 1], np.float32)
    req = DecoderRequest(req.image_embeddings, req.point_coords, req.point_labels, req.mask_input, has)
    ((_, ious),) = run_decoder_batched([req], runner("full"), 8, broadcast_image=True, run_nomask=runner("nomask"))
    assert seen["nomask"] == [["image_embeddings", "point_coords", "point_labels"]]  # no mask inputs at all
    assert seen["full"] == [["has_mask_input", "image_embeddings", "mask_input", "point_coords", "point_labels"]]
    np.testing.assert_array_equal(ious[:, 0], req.point_coords[:, 0, 0])  # each prompt's own result, in order
