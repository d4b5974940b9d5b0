"""One response per request, in order: each request's own error stays its own (a bad request
never fails the batch it came in). Importable only inside Triton's python backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def error_response(message: str, cancelled: bool = False):
    import triton_python_backend_utils as pb_utils

    code = pb_utils.TritonError.CANCELLED if cancelled else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def tensors_response(outputs: dict[str, np.ndarray]):
    import triton_python_backend_utils as pb_utils

    return pb_utils.InferenceResponse([pb_utils.Tensor(name, value) for name, value in outputs.items()])


def batched_responses(
    requests: Sequence,
    parse: Callable,
    run: Callable[[list], list],
    respond: Callable,
    what: str,
) -> list:
    """parse(request) for each request (ValueError: that request's error response); run(parsed)
    on the valid ones together, one output per input (an exception fails the requests of that
    run only, with `what` in the message); respond(output) makes each success's response."""
    responses: list = [None] * len(requests)
    parsed, valid = [], []
    for i, request in enumerate(requests):
        try:
            parsed.append(parse(request))
            valid.append(i)
        except ValueError as exc:
            responses[i] = error_response(str(exc))
    try:
        outputs: list = run(parsed) if parsed else []
    except Exception as exc:
        outputs = [exc] * len(valid)
    for i, out in zip(valid, outputs, strict=True):
        responses[i] = error_response(f"{what} failed: {out}") if isinstance(out, Exception) else respond(out)
    return responses
