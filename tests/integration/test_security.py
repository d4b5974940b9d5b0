"""Bearer tokens and TLS (server and mutual) on the gateway."""

from __future__ import annotations

import ssl

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samserve.client import SamClient
from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
from samserve.devtools.sample_images import png_image

IMAGE = png_image(64, 64, 31)


@pytest.fixture(scope="module")
def token_gateway(triton_server, redis_server):
    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url, auth_tokens="s3cret, other-token"))
    yield gw
    gw.stop()


@pytest.mark.parametrize("token", [None, "wrong", "s3cret2", ""], ids=["none", "wrong", "prefix", "empty"])
def test_missing_or_wrong_token_is_unauthenticated(token_gateway, token):
    with SamClient(token_gateway.target, token=token) as c, pytest.raises(grpc.RpcError) as err:
        c.embed(IMAGE)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in err.value.details()


def test_streaming_methods_are_refused_without_a_token_at_once(token_gateway):
    """The denial has each method's kind: a stream is refused with a status, not left waiting."""
    with SamClient(token_gateway.target, timeout_s=10) as c:
        for call in (
            lambda: list(c.embed_many([IMAGE])),
            lambda: list(c.generate_masks_stream(IMAGE, points_per_side=2)),
            lambda: list(c.stub.EmbedMany(iter([]), timeout=10)),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, err.value.details()


@pytest.mark.parametrize("token", ["s3cret", "other-token"])
def test_a_valid_token_is_served(token_gateway, token):
    with SamClient(token_gateway.target, token=token) as c:
        assert c.embed(IMAGE).original_size.width == 64


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Bearer s3cret2", "Bearer", "s3cret", "Basic czNjcmV0"])
def test_http_needs_the_same_tokens(token_gateway, header):
    headers = {} if header is None else {"authorization": header}
    before = token_gateway.metric("samserve_requests_total", {"method": "any", "code": "UNAUTHENTICATED"})
    for method, path in (("POST", "/v1/embed"), ("POST", "/v1/segment"), ("GET", "/v1/models")):
        r = httpx.request(
            method, token_gateway.http_url + path, headers=headers, files={"image": IMAGE} if method == "POST" else None
        )
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["status"] == "UNAUTHENTICATED" and "Bearer" in r.json()["error"]["message"]
    after = token_gateway.metric("samserve_requests_total", {"method": "any", "code": "UNAUTHENTICATED"})
    assert after == before + 3


@pytest.mark.parametrize("token", ["s3cret", "other-token"])
def test_http_serves_a_valid_token(token_gateway, token):
    r = httpx.post(
        token_gateway.http_url + "/v1/embed", headers={"authorization": f"Bearer {token}"}, files={"image": IMAGE}
    )
    assert r.status_code == 200 and r.json()["original_size"] == {"height": 64, "width": 64}


def test_http_page_schema_and_health_need_no_token(token_gateway):
    for path in ("/", "/static/app.js", "/openapi.json", "/v1/health"):
        assert httpx.get(token_gateway.http_url + path).status_code in (200, 503), path
    assert httpx.get(token_gateway.http_url + "/openapi.json").json()["paths"]["/v1/segment"]["post"]["security"]


def test_health_needs_no_token(token_gateway):
    with grpc.insecure_channel(token_gateway.target) as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert r.status in (health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING)


def test_tls_server(triton_server, redis_server, certs):
    gw = GatewayThread(
        gateway_settings(
            triton_server.grpc_url,
            redis_server.url,
            tls_cert_file=certs / "server.pem",
            tls_key_file=certs / "server.key",
        )
    )
    try:
        with SamClient(gw.target, root_certificates=(certs / "ca.pem").read_bytes(), timeout_s=10) as c:
            assert c.embed(IMAGE).original_size.height == 64
        with SamClient(gw.target, timeout_s=5) as c, pytest.raises(grpc.RpcError) as err:
            c.embed(IMAGE)  # plaintext against a TLS port
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # the HTTP API on the same certificate
        assert gw.http_url.startswith("https://")
        r = httpx.post(
            gw.http_url + "/v1/embed",
            files={"image": IMAGE},
            verify=ssl.create_default_context(cafile=certs / "ca.pem"),
        )
        assert r.status_code == 200 and r.json()["original_size"]["height"] == 64
        with pytest.raises(httpx.ConnectError):
            httpx.get(gw.http_url + "/v1/health")  # the system's CAs do not trust it
        with pytest.raises(httpx.HTTPError):
            httpx.get(gw.http_url.replace("https://", "http://") + "/v1/health")  # plaintext against TLS
    finally:
        gw.stop()


def test_mutual_tls_requires_a_client_certificate(triton_server, redis_server, certs):
    gw = GatewayThread(
        gateway_settings(
            triton_server.grpc_url,
            redis_server.url,
            tls_cert_file=certs / "server.pem",
            tls_key_file=certs / "server.key",
            tls_client_ca_file=certs / "ca.pem",
        )
    )
    ca = (certs / "ca.pem").read_bytes()
    try:
        with SamClient(
            gw.target,
            root_certificates=ca,
            private_key=(certs / "client.key").read_bytes(),
            certificate_chain=(certs / "client.pem").read_bytes(),
            timeout_s=10,
        ) as c:
            assert c.embed(IMAGE).original_size.height == 64
        with SamClient(gw.target, root_certificates=ca, timeout_s=5) as c, pytest.raises(grpc.RpcError) as err:
            c.embed(IMAGE)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        # HTTP: served with a client certificate, refused in the handshake without
        context = ssl.create_default_context(cafile=certs / "ca.pem")
        with pytest.raises(httpx.HTTPError):
            httpx.post(gw.http_url + "/v1/embed", files={"image": IMAGE}, verify=context)
        context.load_cert_chain(certs / "client.pem", certs / "client.key")
        r = httpx.post(gw.http_url + "/v1/embed", files={"image": IMAGE}, verify=context)
        assert r.status_code == 200 and r.json()["original_size"]["height"] == 64
    finally:
        gw.stop()
