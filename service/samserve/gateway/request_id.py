"""The id of the request being served, for log lines anywhere below the transport (set once
per RPC by transport/status.py; asyncio tasks inherit it)."""

from __future__ import annotations

from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("samserve_request_id", default="-")
