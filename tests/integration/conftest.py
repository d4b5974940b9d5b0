"""Integration fixtures: raw gRPC stubs and Triton's own statistics (the proof of what ran)."""

from __future__ import annotations

import itertools

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

    def counts(self, model: str) -> tuple[int, int]:
        """(inference_count, execution_count) of a model so far."""
        s = self.client.get_inference_statistics(model_name=model).model_stats[0]
        return int(s.inference_count), int(s.execution_count)

    def inferences(self, model: str) -> int:
        return self.counts(model)[0]


@pytest.fixture(scope="session")
def triton_stats(triton_server) -> TritonStats:
    return TritonStats(triton_server.grpc_url)
