"""One response per request, in order: each request's own error stays its own (a bad request
never fails the batch it came in). Importable only inside Triton's python backend."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from samserve.contract import NOT_RESIDENT, model_id_of, model_mismatch


class ModelMismatch(ValueError):
    """An embedding made by another model than this one (a model swapped under a gateway, or
    pods of two versions behind one Service): refused as UNAVAILABLE, which callers retry."""


def refuse_other_models(made_by: np.ndarray | None, model_id: str) -> None:
    """Raises ModelMismatch unless the request's model_id input (when it has one) is this model's."""
    if made_by is None:
        return  # a caller of a version before model ids: nothing to check
    refused = model_mismatch(model_id_of(made_by), model_id)
    if refused:
        raise ModelMismatch(refused)


def error_response(message: str, code: str = "INTERNAL"):
    """code: a pb_utils.TritonError code name (INTERNAL, UNAVAILABLE, CANCELLED, ...)."""
    import triton_python_backend_utils as pb_utils

    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, getattr(pb_utils.TritonError, code)))


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
        except ModelMismatch as exc:
            responses[i] = error_response(str(exc), "UNAVAILABLE")
        except ValueError as exc:  # NOT_FOUND for an embedding asked by a key not kept (NotResident)
            responses[i] = error_response(str(exc), "NOT_FOUND" if NOT_RESIDENT in str(exc) else "INTERNAL")
    try:
        outputs: list = run(parsed) if parsed else []
    except Exception as exc:
        outputs = [exc] * len(valid)
    for i, out in zip(valid, outputs, strict=True):
        responses[i] = error_response(f"{what} failed: {out}") if isinstance(out, Exception) else respond(out)
    return responses
