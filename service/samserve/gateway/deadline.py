"""A request's deadline, carried from the transport through every backend call."""

from __future__ import annotations

import time

from samserve.core.errors import DeadlineExceeded


class Deadline:
    """The client's deadline as an absolute monotonic time (None = no deadline)."""

    def __init__(self, remaining_s: float | None) -> None:
        self.at = None if remaining_s is None else time.monotonic() + remaining_s

    def remaining(self, what: str) -> float | None:
        if self.at is None:
            return None
        left = self.at - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded(f"deadline exceeded before {what}")
        return left
