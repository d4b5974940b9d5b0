"""Fidelity: the served stack against segment_anything.SamPredictor on the same weights."""

from __future__ import annotations

import contextlib

import pytest

RESULTS: list[tuple[str, float, float, float]] = []  # (case, mean IoU, min IoU, max |score difference|)


@pytest.fixture(scope="session")
def fidelity_results():
    return RESULTS


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    terminalreporter.section("fidelity vs the reference (SamPredictor, SamAutomaticMaskGenerator)")
    terminalreporter.write_line(f"{'case':58s} {'mean IoU':>9s} {'min IoU':>9s} {'max dscore':>10s}")
    for case, mean_iou, min_iou, diff in RESULTS:
        terminalreporter.write_line(f"{case:58s} {mean_iou:9.5f} {min_iou:9.5f} {diff:10.2e}")


@contextlib.contextmanager
def serving(loaded, work, redis_url: str, cache_dir):
    """`loaded`'s CPU repository in `work` on its own Triton, behind a gateway: a SamClient."""
    from build_engines.repository import write_cpu_repository
    from samserve.client import SamClient
    from samserve.devtools.gateway_thread import GatewayThread, gateway_settings
    from samserve.devtools.local_servers import start_triton

    repo = write_cpu_repository(loaded, work / "repo")
    triton = start_triton(repo, work / "triton.log", cache_dir)
    gw = GatewayThread(gateway_settings(triton.grpc_url, redis_url))
    try:
        with SamClient(gw.target, timeout_s=300) as client:
            yield client
    finally:
        gw.stop()
        triton.stop()


def predictors_by_shape(make_predictor, shapes: dict[str, tuple[int, int]], first_seed: int):
    """get(shape name) -> (a reference predictor with that shape's synthetic image set, the
    image encoded), each made once."""
    import torch

    from samserve.devtools.sample_images import encode, synthetic_image

    cache = {}

    def get(name: str):
        if name not in cache:
            h, w = shapes[name]
            img = synthetic_image(h, w, seed=first_seed + list(shapes).index(name))
            p = make_predictor()
            with torch.no_grad():
                p.set_image(img)
            cache[name] = (p, encode(img))
        return cache[name]

    return get
