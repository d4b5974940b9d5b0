"""Integration fixtures: raw gRPC stubs and Triton's own statistics (the proof of what ran)."""

from __future__ import annotations

import itertools
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from samserve.v1 import samserve_pb2_grpc as pb_grpc

_seeds = itertools.count(1000)


@pytest.fixture
def fresh_seed() -> int:
    """A seed no other test uses: its image is new to the shared cache."""
    return next(_seeds)


@pytest.fixture(scope="session")
def stub(gateway):
    channel = grpc.insecure_channel(gateway.target, options=[("grpc.max_send_message_length", 64 << 20)])
    yield pb_grpc.SegmentAnythingStub(channel)
    channel.close()


class TritonStats:
    def __init__(self, url: str) -> None:
        import tritonclient.grpc as tc

        self.client = tc.InferenceServerClient(url)

    def _read(self, model: str) -> tuple[int, int]:
        s = self.client.get_inference_statistics(model_name=model).model_stats[0]
        return int(s.inference_count), int(s.execution_count)

    def counts(self, model: str, settle_s: float = 0.15, limit_s: float = 5.0) -> tuple[int, int]:
        """(inference_count, execution_count) of a model so far, once they hold still for
        `settle_s`: Triton counts a request after its response has gone out, so a read right
        after a reply (or while an earlier test's work drains) can miss it."""
        deadline = time.monotonic() + limit_s
        last = self._read(model)
        while True:
            time.sleep(settle_s)
            now = self._read(model)
            if now == last or time.monotonic() > deadline:
                return now
            last = now

    def inferences(self, model: str) -> int:
        return self.counts(model)[0]


@pytest.fixture(scope="session")
def triton_stats(triton_server) -> TritonStats:
    return TritonStats(triton_server.grpc_url)


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl)."""
    d = tmp_path_factory.mktemp("certs")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=samserve-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    )
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            f"{name}.pem",
        )
    return d
