"""The shipped model (models/sam_small_shapes.pth) served by its own Triton + gateway.
SAMSERVE_QUALITY_CHECKPOINT=<path> measures another checkpoint the same way (a candidate
before it is shipped); the floors and the bar are the shipped model's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "sam_small_shapes.pth"
CHECKPOINT = Path(os.environ.get("SAMSERVE_QUALITY_CHECKPOINT") or SHIPPED)


@pytest.fixture(scope="session")
def trained_client(redis_server, cache_dir, tmp_path_factory):
    from build_engines.models import load_checkpoint
    from build_engines.repository import write_cpu_repository
    from samserve.client import SamClient
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    loaded = load_checkpoint(CHECKPOINT, "small")
    repo = write_cpu_repository(loaded, tmp_path_factory.mktemp("trained") / "repo")
    triton = start_triton(repo, tmp_path_factory.mktemp("trained-logs") / "triton.log", cache_dir)
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    try:
        with SamClient(gw.target, timeout_s=300) as client:
            yield client
    finally:
        gw.stop()
        triton.stop()
