"""The shipped model (models/sam_small_shapes.pth) served by its own Triton + gateway (the
session fixture trained_gateway, tests/conftest.py). SAMSERVE_QUALITY_CHECKPOINT=<path>
measures another checkpoint the same way (a candidate before it is shipped); the floors and
the bar are the shipped model's."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def trained_client(trained_gateway):
    from samserve.client import SamClient

    with SamClient(trained_gateway.target, timeout_s=300) as client:
        yield client
