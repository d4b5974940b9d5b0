"""The tracking graphs' build-time verification fails a graph that is not its model's."""

from __future__ import annotations

import pytest
import torch

from build_engines.export_sam2_tracking import (
    TrackingVerificationError,
    export_tracking_graphs,
    verify_tracking_graphs,
)


@torch.no_grad()
def test_a_graph_that_differs_from_its_model_fails_the_build(tmp_path):
    from tests.support.sam2_video import scaled_video_predictor

    predictor = scaled_video_predictor(seed=8)
    paths = export_tracking_graphs(predictor, tmp_path)
    worst = verify_tracking_graphs(predictor, paths)
    assert set(worst) == set(paths) and max(worst.values()) < 1e-3
    predictor.memory_encoder.out_proj.weight.mul_(1.01)  # the model moves on; the graph stays
    with pytest.raises(TrackingVerificationError, match=r"sam2_memory_encoder\.onnx"):
        verify_tracking_graphs(predictor, paths)
