"""Admission's per-client share and the client keys of each transport."""

from __future__ import annotations

import pytest

from samserve.core.errors import OverCapacity
from samserve.gateway.request_id import client_key, grpc_address
from samserve.gateway.transport.status import Admission


def test_a_client_takes_at_most_its_share_and_the_gateway_its_limit():
    slots = Admission(3, per_client=2)
    slots.enter("a")
    slots.enter("a")
    with pytest.raises(OverCapacity, match="this client"):
        slots.enter("a")
    slots.enter("b")
    with pytest.raises(OverCapacity, match="3 requests in flight"):
        slots.enter("c")
    slots.leave("a")
    slots.enter("c")
    assert slots.active == 3 and slots.by_client == {"a": 1, "b": 1, "c": 1}
    for c in "abc":
        slots.leave(c)
    assert slots.active == 0 and slots.by_client == {}  # no key left behind per client ever seen


def test_client_keys():
    assert grpc_address("ipv4:10.0.0.7:51234") == "10.0.0.7"
    assert grpc_address("ipv6:[::1]:51234") == "::1"
    assert grpc_address("unix:/run/x.sock") == "unix:/run/x.sock"
    assert client_key(None, "10.0.0.7") == client_key("", "10.0.0.7") != client_key(None, "10.0.0.8")
    assert client_key("tok", "10.0.0.7") == client_key("tok", "10.0.0.8")  # a token is one client anywhere
    assert "secret-token" not in client_key("secret-token", "x")  # hashed: keys may be logged
