"""EmbedMany: a result per image in order, each with its own status; the encoder batches the
stream's images (Triton statistics); the server's window bounds what is in flight; over gRPC,
HTTP (NDJSON) and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import threading
import time

import httpx
import jsonschema
import numpy as np

from samserve.client import SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image


def stream_images(seed: int, n: int) -> list[bytes]:
    images = [png_image(96 + 8 * (i % 3), 128, seed * 100 + i) for i in range(n)]
    images[3] = b"not an image"
    images[6] = png_image(4, 4, seed)  # smaller than min_image_side
    return images


def test_results_in_order_with_their_own_status_and_a_batched_encoder(client, triton_stats, fresh_seed):
    images = stream_images(fresh_seed, 12)
    inferences, executions = triton_stats.counts("sam_encoder")
    results = list(client.embed_many(images, window=8))
    assert [r.index for r in results] == list(range(12))
    assert [r.status for r in results] == ["INVALID_ARGUMENT" if i in (3, 6) else "OK" for i in range(12)]
    assert "cannot identify" in results[3].message and "8" in results[6].message
    for data, r in zip(images, results, strict=True):
        if r.status == "OK":
            assert r.embedded.image_id == hashlib.sha256(data).hexdigest() and not r.embedded.cached
    after_inferences, after_executions = triton_stats.counts("sam_encoder")
    assert after_inferences - inferences == 10
    assert after_executions - executions < 10, "the stream's images never shared an encoder execution"
    # embedded: a second pass is all cache hits, no encoder run
    again = list(client.embed_many(images[:3]))
    assert all(r.embedded.cached for r in again)
    assert triton_stats.counts("sam_encoder")[0] == after_inferences


def test_the_servers_window_bounds_the_work_in_flight(triton_server, redis_server, fresh_seed):
    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, embed_many_window=2))
    peak = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], gw.metric("samserve_requests_in_flight"))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with SamClient(gw.target) as c:
            images = [png_image(160, 200, fresh_seed * 100 + i) for i in range(8)]
            results = list(c.embed_many(images, window=64))  # the client would send them all at once
        assert [r.status for r in results] == ["OK"] * 8
    finally:
        done.set()
        watcher.join()
        gw.stop()
    assert 1 <= peak[0] <= 2


def test_embed_many_over_http_is_ndjson_in_order(gateway, fresh_seed):
    images = stream_images(fresh_seed, 7)
    schema = httpx.get(gateway.http_url + "/openapi.json").json()
    files = [("image", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    with httpx.stream("POST", gateway.http_url + "/v1/embed_many", files=files, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    for line in lines:
        jsonschema.validate(line, {"$ref": "#/components/schemas/EmbedManyResult", "components": schema["components"]})
    assert [x["index"] for x in lines] == list(range(7))
    assert [x["status"] for x in lines] == ["INVALID_ARGUMENT" if i in (3, 6) else "OK" for i in range(7)]
    assert lines[0]["embedded"]["image_id"] == hashlib.sha256(images[0]).hexdigest()
    bad = httpx.post(gateway.http_url + "/v1/embed_many", json={"image": "x"})
    assert bad.status_code == 400 and "multipart" in bad.json()["error"]["message"]


def test_the_cli_embeds_a_folder_with_a_summary(gateway, tmp_path, fresh_seed):
    for i, data in enumerate(stream_images(fresh_seed, 8)):
        (tmp_path / f"img{i}.png").write_bytes(data)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "samserve.client.cli",
            "embed",
            str(tmp_path),
            "--concurrency",
            "4",
            "--server",
            gateway.target,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1  # two images failed
    assert "6 embedded, 0 already cached, 2 failed" in r.stdout, r.stdout
    assert "img3.png: INVALID_ARGUMENT" in r.stdout + r.stderr


def test_an_empty_stream_ends_at_once(client):
    assert list(client.embed_many([])) == []


def _part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


BOUNDARY = "samserve-test-boundary"


def _noise_png(rng, side: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_http_embed_many_answers_while_the_upload_goes_on_and_holds_each_image_to_the_limit(
    triton_server, redis_server, fresh_seed
):
    """The first image's line comes back while the rest of the body is still unsent (the parts
    are read as they arrive, not buffered whole), and an image over max_request_bytes is
    refused alone (RESOURCE_EXHAUSTED), as gRPC refuses such a message."""
    import http.client

    from samserve.gateway.transport.http_api import max_body_bytes

    rng = np.random.default_rng(fresh_seed)
    big = _noise_png(rng, 320)
    limit = 200 * 1024
    assert len(big) > limit
    small = [png_image(64, 80, fresh_seed * 100 + i) for i in range(3)]
    head = _part("request", b'{"model": ""}') + _part("image", small[0], "0.png")
    # more than the whole-body limit of other routes (max_body_bytes), each part under its own
    middle = [_noise_png(rng, 220) for _ in range(8)]
    rest = _part("image", big, "1.png") + _part("image", small[1], "2.png")
    rest += b"".join(_part("image", m, f"m{i}.png") for i, m in enumerate(middle))
    rest += _part("image", small[2], "3.png") + f"--{BOUNDARY}--\r\n".encode()
    cut = len(f"--{BOUNDARY}\r\n")  # a part is complete once the next delimiter has come
    head, rest = head + rest[:cut], rest[cut:]
    # the client below waits for a line before sending on: a rate of 1 B/s lets it
    settings = gateway_settings(triton_server.grpc_url, redis_server.url, max_request_bytes=limit, http_min_body_rate=1)
    assert len(head) + len(rest) > max_body_bytes(settings)
    gw = GatewayThread(settings)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", gw.gateway.http_port, timeout=60)
        conn.putrequest("POST", "/v1/embed_many")
        conn.putheader("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
        conn.putheader("Content-Length", str(len(head) + len(rest)))
        conn.endheaders(head)
        response = conn.getresponse()  # before the rest of the body is sent
        assert response.status == 200, response.read()
        first = json.loads(response.readline())
        assert first["index"] == 0 and first["status"] == "OK"
        assert first["embedded"]["image_id"] == hashlib.sha256(small[0]).hexdigest()
        conn.send(rest)
        lines = [json.loads(line) for line in response.read().splitlines() if line]
        conn.close()
    finally:
        gw.stop()
    assert [x["index"] for x in lines] == list(range(1, 12))
    assert [x["status"] for x in lines] == ["RESOURCE_EXHAUSTED"] + ["OK"] * 10
    assert "max_request_bytes" in lines[0]["message"] and str(limit) in lines[0]["message"]


def test_http_embed_many_refuses_a_malformed_upload_with_a_status(gateway):
    url = gateway.http_url + "/v1/embed_many"
    content_type = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    cases = {
        "no image": _part("request", b"{}") + f"--{BOUNDARY}--\r\n".encode(),
        "not a file": _part("image", b"abc") + f"--{BOUNDARY}--\r\n".encode(),
        "unknown part": _part("other", b"x", "x.png") + f"--{BOUNDARY}--\r\n".encode(),
        "truncated": _part("image", png_image(32, 32, 1), "a.png"),
        "garbage": b"this is not multipart at all",
    }
    for case, body in cases.items():
        r = httpx.post(url, content=body, headers=content_type, timeout=60)
        assert r.status_code == 400, (case, r.status_code, r.text)
        assert r.json()["error"]["status"] == "INVALID_ARGUMENT" and "multipart" in r.json()["error"]["message"], case
