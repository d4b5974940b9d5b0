"""Session fixtures shared by the integration and fidelity tests: the small test model, its
CPU model repository, and real redis-server / tritonserver processes on free loopback ports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from build_engines import torchvision_compat

torchvision_compat.install()  # the reference needs torchvision; the CPU machines have none that imports

TEST_SEED = 0
TEST_IMG_SIZE = 256  # not 1024: proves nothing hard-codes S
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "sam_small_shapes.pth"
TRAINED_CHECKPOINT = Path(os.environ.get("SAMSERVE_QUALITY_CHECKPOINT") or SHIPPED)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("samserve-cache")


@pytest.fixture(scope="session")
def small_sam():
    from build_engines.models import build_small_sam

    return build_small_sam(img_size=TEST_IMG_SIZE, seed=TEST_SEED)


@pytest.fixture(scope="session")
def served_model_id(small_sam) -> str:
    """The id the CPU repository of the test model serves under (model_id, cache keys)."""
    from samserve.contract import served_model_id

    return served_model_id(small_sam.model_id, "cpu")


@pytest.fixture(scope="session")
def model_repository(small_sam, tmp_path_factory) -> Path:
    from build_engines.repository import write_cpu_repository

    return write_cpu_repository(small_sam, tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="session")
def redis_server():
    from samserve.devtools.local_servers import start_redis

    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def triton_server(model_repository, cache_dir, tmp_path_factory):
    from samserve.devtools.local_servers import start_triton

    server = start_triton(model_repository, tmp_path_factory.mktemp("logs") / "triton.log", cache_dir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gateway(triton_server, redis_server):
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings

    gw = GatewayThread(gateway_settings(triton_server.grpc_url, redis_server.url))
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def client(gateway):
    from samserve.client import SamClient

    with SamClient(gateway.target) as c:
        yield c


@pytest.fixture(scope="session")
def trained_gateway(redis_server, cache_dir, tmp_path_factory):
    """The shipped shapes model (or SAMSERVE_QUALITY_CHECKPOINT) on its own Triton, behind a
    gateway: masks that mean something (the quality bar, the page's tests)."""
    from build_engines.models import load_checkpoint
    from build_engines.repository import write_cpu_repository
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    loaded = load_checkpoint(TRAINED_CHECKPOINT, "small")
    repo = write_cpu_repository(loaded, tmp_path_factory.mktemp("trained") / "repo")
    triton = start_triton(repo, tmp_path_factory.mktemp("trained-logs") / "triton.log", cache_dir)
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_server.url))
    try:
        yield gw
    finally:
        gw.stop()
        triton.stop()


_session_status = [0]


def pytest_sessionfinish(session, exitstatus):
    _session_status[0] = int(exitstatus)


def pytest_unconfigure(config):
    """A thread that a failed test left running must not keep the run from ending: CI waits for
    the process, and a client thread looping on a torn-down gateway never stops. Waits a little
    for such threads, then says which are left and exits with the run's own status. Idle
    executor workers (ThreadPoolExecutor-*) are not waited for: the interpreter ends them."""
    import sys
    import threading
    import time

    def left() -> list[threading.Thread]:
        main = threading.main_thread()
        return [
            t
            for t in threading.enumerate()
            if t is not main and not t.daemon and t.is_alive() and not t.name.startswith("ThreadPoolExecutor")
        ]

    deadline = time.monotonic() + 10
    for t in left():
        t.join(max(0.0, deadline - time.monotonic()))
    if still := left():
        sys.stdout.flush()
        sys.stderr.write(f"threads left running by the tests, not waited for: {[t.name for t in still]}\n")
        sys.stderr.flush()
        os._exit(_session_status[0])
