"""Fuzzing the API with hypothesis (samserve.devtools.fuzz_cases): random and hostile image
bytes, random prompt fields and options. Every answer is OK or a documented error status; never
UNKNOWN or INTERNAL. A short run: benchmarks/fuzz.py runs 10,000 cases and reports memory."""

from __future__ import annotations

import grpc
import pytest
from hypothesis import HealthCheck, given, settings

from samserve.devtools.fuzz_cases import DOCUMENTED, RPCS, VALID
from samserve.v1 import samserve_pb2 as pb

CASES = dict.fromkeys(RPCS, 0)
EXAMPLES = {"Embed": 60, "Segment": 120, "GenerateMasks": 60}


def call(method, request) -> str:
    try:
        method(request, timeout=30)
        return "OK"
    except grpc.RpcError as exc:
        return exc.code().name


@pytest.mark.parametrize("rpc", list(RPCS))
def test_fuzz(stub, rpc):
    @settings(max_examples=EXAMPLES[rpc], deadline=None, suppress_health_check=list(HealthCheck))
    @given(request=RPCS[rpc])
    def one(request):
        CASES[rpc] += 1
        code = call(getattr(stub, rpc), request)
        assert code in DOCUMENTED, (rpc, code, str(request)[:500])

    one()


@pytest.fixture(scope="module", autouse=True)
def report_cases():
    yield
    print(f"\nfuzz cases tried: {CASES} (total {sum(CASES.values())})")


def test_still_serving_after_fuzzing(stub):
    r = stub.Segment(pb.SegmentRequest(image=VALID, prompts=[pb.Prompt(points=[pb.Point(x=5, y=5, label=1)])]))
    assert len(r.results[0].masks) == 3
