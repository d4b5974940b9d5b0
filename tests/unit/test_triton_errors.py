"""gateway/backends/triton.py: Triton's statuses become precise errors with messages of our own."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from samserve.core.errors import BackendError, BackendUnavailable, DeadlineExceeded, OverCapacity
from samserve.gateway.backends.triton import _translate

INTERNALS = "onnxruntime node /mask_decoder/Add_3 failed at 10.12.0.7:8001"


@pytest.mark.parametrize(
    "status, expected",
    [
        ("StatusCode.UNAVAILABLE", BackendUnavailable),
        ("StatusCode.NOT_FOUND", BackendUnavailable),  # model (re)loading
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceeded),
        ("StatusCode.RESOURCE_EXHAUSTED", OverCapacity),  # busy now: worth a retry
        ("StatusCode.INTERNAL", BackendError),
        ("StatusCode.INVALID_ARGUMENT", BackendError),  # the gateway sent what the model refuses: our bug
        ("StatusCode.UNKNOWN", BackendError),
    ],
)
def test_status_maps_to_a_precise_error_without_tritons_text(status, expected, caplog):
    err = _translate(InferenceServerException(INTERNALS, status=status), "sam_decoder")
    assert type(err) is expected
    assert "sam_decoder" in str(err) and "10.12" not in str(err) and "onnxruntime" not in str(err)
    assert INTERNALS in caplog.text  # the operator still sees it
