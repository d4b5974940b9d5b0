"""The project's exceptions. Each carries the user-facing message; transport/status.py maps
them to gRPC status codes in one table."""


class SamServeError(Exception):
    """Base class: `str(exc)` is safe to show to the client."""


class InvalidInput(SamServeError):
    """The request is malformed: undecodable image, bad prompt, out-of-range option."""


class NotFound(SamServeError):
    """An image_id that is unknown or expired."""


class FailedPrecondition(SamServeError):
    """The request is well formed but the state it acts on refuses it (a video session with no
    prompt yet, a WINDOW session asked for what it no longer keeps): change the state first."""


class Busy(SamServeError):
    """Another call holds what this one needs (a video session's propagation runs): ABORTED,
    retry once it ends."""


class Overloaded(SamServeError):
    """Over a configured size limit or work budget (retrying the same request will not help)."""


class OverCapacity(Overloaded):
    """Too busy now (requests in flight, Triton's queue): worth retrying with backoff."""


class RequestTooLarge(Overloaded):
    """The request itself (its bytes) is over the limit; HTTP answers 413."""


class Cancelled(SamServeError):
    """The client went away (closed its connection) before the answer."""


class BackendUnavailable(SamServeError):
    """Triton cannot be reached or is not ready."""


class CacheUnavailable(BackendUnavailable):
    """Redis did not answer a read that only it can answer (an image_id, kept logits): retry."""


class DeadlineExceeded(SamServeError):
    """The client's deadline passed before the work finished."""


class RequestTimeout(DeadlineExceeded):
    """The request's body did not arrive in time (HTTP answers 408)."""


class BackendError(SamServeError):
    """A backend failed in a way the client can neither fix nor retry away (a model's own error):
    INTERNAL. The message is generic; the backend's own text goes to the log only."""
