"""Fidelity: the served stack against segment_anything.SamPredictor on the same weights."""

from __future__ import annotations

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
