"""The samserve CLI against the running gateway: files written, and equal to the API's answer."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from samserve.client import PromptSpec
from samserve.devtools.sample_images import encode, synthetic_image


def run_cli(*args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", "samserve.client.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_segment_writes_the_best_mask_and_an_overlay(gateway, client, tmp_path):
    image = synthetic_image(180, 240, seed=21)
    path = tmp_path / "img.png"
    path.write_bytes(encode(image))
    out = tmp_path / "mask.png"
    stdout = run_cli(
        "segment",
        str(path),
        "--point",
        "100,80",
        "--point",
        "30,30,0",
        "--box",
        "10,10,200,170",
        "--out",
        str(out),
        "--server",
        gateway.target,
    )
    assert "predicted IoU" in stdout
    mask = np.asarray(Image.open(out)) > 0
    seg = client.segment(
        encode(image), [PromptSpec(points=[(100, 80), (30, 30)], labels=[1, 0], box=(10, 10, 200, 170))]
    )
    best = seg.prompts[0].masks[int(np.argmax(seg.prompts[0].iou_predictions))]
    np.testing.assert_array_equal(mask, best)
    overlay = Image.open(tmp_path / "mask_overlay.png")
    assert overlay.size == (240, 180) and overlay.mode == "RGB"


def test_amg_writes_an_overlay(gateway, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(encode(synthetic_image(120, 160, seed=22)))
    out = tmp_path / "amg.png"
    stdout = run_cli(
        "amg",
        str(path),
        "--out",
        str(out),
        "--points-per-side",
        "4",
        "--pred-iou-thresh",
        "0",
        "--stability-score-thresh",
        "0",
        "--server",
        gateway.target,
    )
    assert "masks; overlay" in stdout
    assert Image.open(out).size == (160, 120)


def test_segment_reports_a_bad_prompt_without_a_traceback(gateway, tmp_path):
    path = tmp_path / "img.png"
    path.write_bytes(encode(synthetic_image(50, 50, seed=23)))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "samserve.client.cli",
            "segment",
            str(path),
            "--point",
            "500,5",
            "--server",
            gateway.target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0
    assert "INVALID_ARGUMENT: prompts[0].points[0].x = 500 is outside the image" in r.stderr
    assert "Traceback" not in r.stderr
