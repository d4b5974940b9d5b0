"""Refinement sessions: a mask's low-res logits kept server-side and named by id in the next
round give exactly what sending those logits gives; across replicas through Redis; bounded
and explicit where Redis is off."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from samserve.client import PromptSpec, SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image

FIRST = [PromptSpec(points=[(60, 50)], labels=[1]), PromptSpec(box=(10, 12, 120, 90))]


def refine(client, image_id, mask_input=None, mask_input_id=None):
    prompt = PromptSpec(points=[(60, 50), (100, 30)], labels=[1, 0], mask_input=mask_input, mask_input_id=mask_input_id)
    return client.segment(image_id=image_id, prompts=[prompt], multimask_output=False, return_low_res_logits=True)


def test_a_kept_mask_refines_exactly_as_the_logits_sent_back(client, fresh_seed):
    image_id = client.embed(png_image(120, 160, fresh_seed)).image_id
    first = client.segment(image_id=image_id, prompts=FIRST, return_low_res_logits=True, keep_low_res_logits=True)
    for p in first.prompts:
        assert len(p.low_res_logits_ids) == 3 and len(set(p.low_res_logits_ids)) == 3
    best = int(first.prompts[0].iou_predictions.argmax())
    by_value = refine(client, image_id, mask_input=first.prompts[0].low_res_logits[best])
    by_id = refine(client, image_id, mask_input_id=first.prompts[0].low_res_logits_ids[best])
    assert np.array_equal(by_id.prompts[0].masks, by_value.prompts[0].masks)
    assert np.array_equal(by_id.prompts[0].iou_predictions, by_value.prompts[0].iou_predictions)
    assert np.array_equal(by_id.prompts[0].low_res_logits, by_value.prompts[0].low_res_logits)
    # and it is not just any mask: another of the three gives another answer
    other = refine(client, image_id, mask_input_id=first.prompts[0].low_res_logits_ids[(best + 1) % 3])
    assert not np.array_equal(other.prompts[0].low_res_logits, by_id.prompts[0].low_res_logits)
    # no ids unless asked
    assert client.segment(image_id=image_id, prompts=FIRST).prompts[0].low_res_logits_ids is None


def test_ids_that_name_nothing(client, stub, fresh_seed):
    from samserve.v1 import samserve_pb2 as pb

    image_id = client.embed(png_image(64, 64, fresh_seed)).image_id
    for bad, code in (("0" * 32, grpc.StatusCode.NOT_FOUND), ("x" * 32, grpc.StatusCode.INVALID_ARGUMENT)):
        with pytest.raises(grpc.RpcError) as err:
            client.segment(image_id=image_id, prompts=[PromptSpec(points=[(5, 5)], labels=[1], mask_input_id=bad)])
        assert err.value.code() == code and "mask_input_id" in err.value.details()
    both = pb.Prompt(points=[pb.Point(x=5, y=5, label=1)], mask_input_id="0" * 32)
    both.mask_input.CopyFrom(pb.MaskInput(data=b"\0" * (64 * 64 * 4), height=64, width=64))
    with pytest.raises(grpc.RpcError) as err:
        stub.Segment(pb.SegmentRequest(image_id=image_id, prompts=[both]), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not both" in err.value.details()


def test_another_replica_on_the_same_redis_knows_the_id_and_they_expire(triton_server, redis_server, fresh_seed):
    settings = gateway_settings(triton_server.grpc_url, redis_server.url, logits_ttl_s=2)
    a, b = GatewayThread(settings), GatewayThread(settings)
    try:
        with SamClient(a.target) as ca, SamClient(b.target) as cb:
            data = png_image(100, 120, fresh_seed)
            image_id = ca.embed(data).image_id
            first = ca.segment(
                image_id=image_id, prompts=FIRST[:1], keep_low_res_logits=True, return_low_res_logits=True
            )
            kept = first.prompts[0].low_res_logits_ids[0]
            on_b = refine(cb, image_id, mask_input_id=kept)
            by_value = refine(ca, image_id, first.prompts[0].low_res_logits[0])
            assert np.array_equal(on_b.prompts[0].masks, by_value.prompts[0].masks)
            time.sleep(2.5)
            with pytest.raises(grpc.RpcError) as err:
                refine(ca, image_id, mask_input_id=kept)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and "expired" in err.value.details()
    finally:
        a.stop()
        b.stop()


def test_without_redis_the_replica_keeps_them_itself(triton_server, fresh_seed):
    """No Redis: the logits live in the gateway's process (bounded); another replica does not
    know the id and says so."""
    a = GatewayThread(gateway_settings(triton_server.grpc_url, None))
    b = GatewayThread(gateway_settings(triton_server.grpc_url, None))
    try:
        with SamClient(a.target) as ca, SamClient(b.target) as cb:
            data = png_image(90, 110, fresh_seed)
            first = ca.segment(data, FIRST[:1], keep_low_res_logits=True, return_low_res_logits=True)
            kept = first.prompts[0].low_res_logits_ids[0]
            prompt = PromptSpec(points=[(60, 50)], labels=[1], mask_input_id=kept)
            assert ca.segment(data, [prompt]).prompts[0].masks.shape[1:] == (90, 110)
            with pytest.raises(grpc.RpcError) as err:
                cb.segment(data, [prompt])
            assert err.value.code() == grpc.StatusCode.NOT_FOUND and "another replica" in err.value.details()
    finally:
        a.stop()
        b.stop()


def test_kept_logits_over_the_budgets_are_refused_before_any_work(triton_server, redis_server, fresh_seed):
    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, logits_request_bytes=1))
    try:
        runs = gw.metric("samserve_encoder_runs_total")
        with SamClient(gw.target, timeout_s=60) as c, pytest.raises(grpc.RpcError) as err:
            c.segment(png_image(120, 160, fresh_seed), FIRST, keep_low_res_logits=True)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "logits_request_bytes" in err.value.details() and "logits_client_bytes" in err.value.details()
        assert gw.metric("samserve_encoder_runs_total") == runs  # refused up front: no encoder run
        with SamClient(gw.target, timeout_s=60) as c:  # without keeping, the same request is served
            assert len(c.segment(png_image(120, 160, fresh_seed), FIRST).prompts) == 2
        assert gw.metric("samserve_encoder_runs_total") == runs + 1  # (the counter is the one that counts)
    finally:
        gw.stop()
