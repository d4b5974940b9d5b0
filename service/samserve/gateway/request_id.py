"""The id of the request being served, for log lines anywhere below the transport (set once
per RPC by transport/status.py; asyncio tasks inherit it), and who sent it (set by each
transport before the RPC is admitted: the per-client share of the request slots)."""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

REQUEST_ID: ContextVar[str] = ContextVar("samserve_request_id", default="-")
CLIENT: ContextVar[str] = ContextVar("samserve_client", default="")


def client_key(token: str | None, address: str) -> str:
    """A client: its bearer token where tokens are checked (hashed: the key is logged and held in
    memory), else its network address without the port. Unchecked tokens are not used: a client
    could send a new one with every request."""
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:16]
    return "address:" + address


def grpc_address(peer: str) -> str:
    """gRPC's peer ('ipv4:10.0.0.7:51234', 'ipv6:[::1]:51234', 'unix:/path') without the port."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[") or rest
    return peer
