"""EmbedMany: a result per image in order, each with its own status; the encoder batches the
stream's images (Triton statistics); the server's window bounds what is in flight; over gRPC,
HTTP (NDJSON) and the CLI."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time

import httpx
import jsonschema

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

    watcher = threading.Thread(target=watch)
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
