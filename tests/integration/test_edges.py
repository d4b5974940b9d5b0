"""Slots are held only by work: a stream whose client reads nothing ends after
stream_idle_timeout_s (gRPC and HTTP), a stream lasts at most stream_max_s, a body is received
outside the request slots and must keep a minimum rate, and one client (an address, or a token)
holds at most max_requests_per_client slots."""

from __future__ import annotations

import base64
import json
import socket
import time

import grpc
import httpx
import pytest

from samserve.client import SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image
from samserve.v1 import samserve_pb2 as pb
from samserve.v1 import samserve_pb2_grpc as pb_grpc

IDLE_S = 1.0
MANY_MASKS = {"points_per_side": 8, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def edge(triton_server, redis_server):
    gw = GatewayThread(
        gateway_settings(
            triton_server.grpc_url,
            redis_server.url,
            max_concurrent_requests=6,
            max_requests_per_client=2,
            stream_idle_timeout_s=IDLE_S,
            amg_stream_chunk_bytes=16 * 1024,
            http_min_body_rate=16 * 1024,
        )
    )
    yield gw
    gw.stop()


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not within {timeout} s"
        time.sleep(0.05)


def _post(url: str, path: str, body: bytes, rcvbuf: int | None = None, source: str = "127.0.0.1") -> socket.socket:
    """A raw HTTP POST of a JSON body; the caller reads the answer (or does not)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
    sock.bind((source, 0))
    sock.connect((host, int(port)))
    head = (
        f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def _stream_body(image: bytes) -> bytes:
    fields = {
        "image": base64.b64encode(image).decode(),
        "options": MANY_MASKS,
        "output_format": "MASK_FORMAT_PACKED_BITS",
    }
    return json.dumps(fields).encode()


def test_an_http_stream_its_client_does_not_read_ends_and_frees_its_slot(edge):
    stalled = {"transport": "http"}
    before = edge.metric("samserve_stalled_clients_total", stalled)
    # ~15 MB of NDJSON into a 4 KiB receive window (the kernel's send buffer takes up to 4 MB): the writes block
    sock = _post(edge.http_url, "/v1/generate_masks_stream", _stream_body(png_image(600, 800, 91)), rcvbuf=4096)
    try:
        wait_for(lambda: edge.metric("samserve_stalled_clients_total", stalled) == before + 1, 60, "the stall noticed")
        wait_for(lambda: edge.metric("samserve_requests_in_flight") == 0, 10, "the slot freed")
        sock.settimeout(10)
        with pytest.raises(OSError):  # the connection was closed under the unread answer
            while sock.recv(1 << 20):
                pass
            raise ConnectionResetError("the answer ended")  # an orderly end is also a close
    finally:
        sock.close()
    assert httpx.get(edge.http_url + "/v1/models").status_code == 200


def test_a_grpc_stream_its_client_does_not_read_ends_and_frees_its_slot(edge):
    stalled = {"transport": "grpc"}
    before = edge.metric("samserve_stalled_clients_total", stalled)
    request = pb.GenerateMasksRequest(
        image=png_image(600, 800, 91), output_format=pb.MASK_FORMAT_PACKED_BITS, options=pb.AmgOptions(**MANY_MASKS)
    )
    with grpc.insecure_channel(edge.target) as channel:
        call = pb_grpc.SegmentAnythingStub(channel).GenerateMasksStream(request, timeout=120)
        next(call)  # started; then the client reads nothing more
        wait_for(lambda: edge.metric("samserve_stalled_clients_total", stalled) == before + 1, 60, "the stall noticed")
        wait_for(lambda: edge.metric("samserve_requests_in_flight") == 0, 10, "the slot freed")
        with pytest.raises(grpc.RpcError) as err:
            for _ in call:
                pass
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "stream_idle_timeout_s" in err.value.details()


def test_a_stream_ends_at_its_longest_lifetime(triton_server, redis_server):
    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, stream_max_s=0.2))
    image = png_image(300, 400, 95)
    try:
        with SamClient(gw.target, timeout_s=120) as c, pytest.raises(grpc.RpcError) as err:
            list(c.generate_masks_stream(image, points_per_side=32, crop_n_layers=1))
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "stream_max_s" in err.value.details()
        body = json.dumps({"image": base64.b64encode(image).decode(), "options": {"points_per_side": 32}})
        url = gw.http_url + "/v1/generate_masks_stream"
        r = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=120)
        last = json.loads(r.text.strip().splitlines()[-1]) if r.status_code == 200 else r.json()
        assert last["error"]["status"] == "DEADLINE_EXCEEDED" and "stream_max_s" in last["error"]["message"]
        assert gw.metric("samserve_requests_in_flight") == 0
    finally:
        gw.stop()


def _slow_amg(url: str) -> socket.socket:
    body = json.dumps({"image": base64.b64encode(png_image(200, 260, 82)).decode(), "options": {"points_per_side": 64}})
    return _post(url, "/v1/generate_masks", body.encode())


def test_one_client_holds_at_most_its_share_of_the_slots(edge):
    socks = [_slow_amg(edge.http_url) for _ in range(2)]  # this client's share, from 127.0.0.1
    try:
        wait_for(lambda: edge.metric("samserve_requests_in_flight") == 2, 30, "two slow requests running")
        busy = httpx.get(edge.http_url + "/v1/models")
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert "this client" in busy.json()["error"]["message"] and "max_requests_per_client" in busy.text
        with SamClient(edge.target, timeout_s=30) as c, pytest.raises(grpc.RpcError) as err:
            c.embed(png_image(32, 32, 83))  # gRPC from the same address: the same client
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "this client" in err.value.details()
        # another address is another client: served while the first is at its share
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=30)
        with other:
            assert other.get(edge.http_url + "/v1/models").status_code == 200
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: edge.metric("samserve_requests_in_flight") == 0, 30, "the slots freed")
    assert httpx.get(edge.http_url + "/v1/models").status_code == 200


def test_a_client_is_its_token_where_tokens_are_checked(triton_server, redis_server):
    settings = gateway_settings(
        triton_server.grpc_url, redis_server.url, auth_tokens="tok-a,tok-b", max_requests_per_client=2
    )
    gw = GatewayThread(settings)
    try:
        socks = []
        for _ in range(2):
            body = json.dumps(
                {"image": base64.b64encode(png_image(200, 260, 82)).decode(), "options": {"points_per_side": 64}}
            ).encode()
            host, port = gw.http_url.removeprefix("http://").split(":")
            sock = socket.create_connection((host, int(port)))
            head = (
                f"POST /v1/generate_masks HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer tok-a\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            socks.append(sock)
        try:
            wait_for(lambda: gw.metric("samserve_requests_in_flight") == 2, 30, "two slow requests running")
            a = httpx.get(gw.http_url + "/v1/models", headers={"authorization": "Bearer tok-a"})
            b = httpx.get(gw.http_url + "/v1/models", headers={"authorization": "Bearer tok-b"})
            assert (a.status_code, b.status_code) == (429, 200)
            # over gRPC the client is the token the interceptor checked (the first), not a later one
            with grpc.insecure_channel(gw.target) as channel:
                stub = pb_grpc.SegmentAnythingStub(channel)
                for extra in ("Bearer anything-else", "Bearer tok-b"):
                    metadata = [("authorization", "Bearer tok-a"), ("authorization", extra)]
                    with pytest.raises(grpc.RpcError) as err:
                        stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=10)
                    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
        finally:
            for s in socks:
                s.close()
    finally:
        gw.stop()


def test_a_body_still_arriving_takes_no_request_slot_and_a_dribbled_one_is_refused(triton_server, redis_server):
    """One request slot: a client dribbling its body does not keep a ready request out, and a
    body under http_min_body_rate (after its first 2 s) is refused with 408."""
    gw = GatewayThread(
        gateway_settings(triton_server.grpc_url, redis_server.url, max_concurrent_requests=1, http_min_body_rate=1024)
    )
    host, port = gw.http_url.removeprefix("http://").split(":")
    try:
        sock = socket.create_connection((host, int(port)))
        head = f"POST /v1/embed HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        head += "content-length: 100000\r\n\r\n"
        sock.sendall(head.encode() + b'{"image": "')
        started = time.monotonic()
        time.sleep(0.3)
        assert httpx.get(gw.http_url + "/v1/models").status_code == 200  # not kept out by the upload
        sock.settimeout(1)
        answer = b""
        while not answer.endswith(b"}}"):
            try:
                answer += sock.recv(65536)
            except TimeoutError:
                sock.sendall(b"A" * 100)  # 100 bytes a second: under 1024 bytes/s
            assert time.monotonic() - started < 20, "a dribbled body was not refused"
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"http_min_body_rate" in answer
        sock.close()
        assert gw.metric("samserve_requests_total", {"method": "Embed", "code": "DEADLINE_EXCEEDED"}) >= 1
    finally:
        gw.stop()


def test_bytes_sent_early_buy_no_long_silence(triton_server, redis_server):
    """A body that keeps the rate on average but then stops is refused once its pause passes
    BODY_MAX_PAUSE_S, not after the minutes its early bytes would have bought."""
    from samserve.gateway.transport.http_edge import BODY_MAX_PAUSE_S

    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, http_min_body_rate=1024))
    host, port = gw.http_url.removeprefix("http://").split(":")
    try:
        sock = socket.create_connection((host, int(port)))
        head = f"POST /v1/embed HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
        head += "content-length: 2000000\r\n\r\n"
        sock.sendall(head.encode() + b'{"image": "' + b"A" * 500_000)  # ~8 minutes of credit at 1 KiB/s
        started = time.monotonic()
        sock.settimeout(3 * BODY_MAX_PAUSE_S)
        answer = b""
        while not answer.endswith(b"}}"):
            answer += sock.recv(65536)
        waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert BODY_MAX_PAUSE_S - 1 < waited < 2 * BODY_MAX_PAUSE_S, waited
        sock.close()
    finally:
        gw.stop()
