"""Every PromQL expression of the Grafana dashboard, evaluated by a real Prometheus that scraped
the real gateway and Triton after real traffic: each must parse and return data. A metric
renamed in the code breaks this test. GPU panels are excepted on machines without a GPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest

from samserve.client import PromptSpec
from samserve.devtools.local_servers import free_port
from samserve.devtools.sample_images import png_image

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "dashboards" / "samserve.json"
GPU_PANELS = {"GPU utilisation", "GPU memory used"}  # nv_gpu_* exist only where Triton sees a GPU
WINDOW = "20s"  # stands in for Grafana's $__rate_interval; scrapes are every second


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


@pytest.fixture(scope="module")
def prometheus(gateway, triton_server, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    from prometheus_client import start_http_server

    metrics_port = free_port()
    httpd, _ = start_http_server(metrics_port, addr="127.0.0.1", registry=gateway.metrics.registry)
    work = tmp_path_factory.mktemp("prometheus")
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: samserve-gateway\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        f"  - job_name: triton\n    static_configs:\n      - targets: ['127.0.0.1:{triton_server.metrics_port}']\n"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/-/ready", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("prometheus did not become ready") from None
                time.sleep(0.2)
        while True:  # service discovery hands targets to the scrapers in batches (every 5 s)
            targets = get_json(f"{url}/api/v1/targets")["data"]["activeTargets"]
            if sum(t["health"] == "up" for t in targets) == 2:
                break
            if time.monotonic() > deadline + 30:
                raise RuntimeError(f"prometheus targets not up: {targets}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        httpd.shutdown()


def dashboard_queries() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p["targets"]]


@pytest.fixture(scope="module")
def traffic(client, gateway, prometheus):
    """Embed (miss and hit), Segment, GenerateMasks and a failing request over gRPC, one
    request over HTTP, then two scrapes."""
    import httpx

    from samserve.v1 import samserve_pb2 as pb

    data = png_image(140, 180, 777)
    for _ in range(3):
        client.embed(data)
        client.segment(data, [PromptSpec(points=[(50, 60)], labels=[1])])
    client.generate_masks(data, points_per_side=2)
    with pytest.raises(grpc.RpcError):
        client.stub.Embed(pb.EmbedRequest(image=b"not an image"))
    assert httpx.get(gateway.http_url + "/v1/models").status_code == 200
    time.sleep(4)
    return prometheus


@pytest.mark.parametrize("title, expr", dashboard_queries(), ids=[t for t, _ in dashboard_queries()])
def test_dashboard_query_returns_data(traffic, title, expr):
    query = expr.replace("$__rate_interval", WINDOW)
    answer = get_json(f"{traffic}/api/v1/query?" + urllib.parse.urlencode({"query": query}))
    assert answer["status"] == "success", answer
    if title in GPU_PANELS:
        pytest.skip(f"{title}: Triton exports nv_gpu_* only with a GPU; none here")
    result = answer["data"]["result"]
    assert result, f"{title}: {query} returned no data"
    if "by model" in title:  # served models' names (a name not served counts as "unknown")
        names = {r["metric"]["model"] for r in result}
        assert "default" in names and names <= {"default", "unknown"}, result


def test_every_panel_has_a_query():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) >= 10 and all(p["targets"] for p in panels)
    titles = " ".join(p["title"] for p in panels)
    for needed in (
        "Request rate",
        "Error rate",
        "p50 / p95 / p99",
        "cache hit",
        "Encoder / decoder / AMG",
        "queue time",
        "batch size",
        "GPU utilisation",
        "GPU memory",
    ):
        assert needed.lower() in titles.lower(), needed
