"""triton.cpu_runtime: OpenVINO runs the CPU models (fp32 equal to ONNX Runtime's, bf16 where the
CPU has it), ONNX Runtime is the fallback for fp32 only, and each session says what runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from samserve.contract import BF16, FP32, ONNXRUNTIME, OPENVINO
from samserve.triton.cpu_runtime import Bf16Unavailable, CpuSession, bf16_hardware

HAS_BF16 = bf16_hardware() != ""
NO_BF16 = "this CPU has neither AMX nor AVX512-BF16"


@pytest.fixture(scope="module")
def encoder_onnx(small_sam, tmp_path_factory) -> Path:
    from build_engines.export_onnx import export_encoder

    return export_encoder(small_sam.sam, tmp_path_factory.mktemp("enc") / "model.onnx")


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 256, 256)).astype(np.float32)


def test_openvino_fp32_equals_onnx_runtime(encoder_onnx):
    ov, ort = CpuSession(str(encoder_onnx), FP32, OPENVINO), CpuSession(str(encoder_onnx), FP32, ONNXRUNTIME)
    assert ov.runtime.startswith("openvino ") and ov.runtime.endswith(" fp32")
    assert ort.runtime.startswith("onnxruntime ") and "fp32" in ort.runtime
    x = _image()
    a, b = ov.run(["image_embeddings"], {"images": x})[0], ort.run(["image_embeddings"], {"images": x})[0]
    assert a.shape == b.shape == (1, 256, 16, 16) and float(np.abs(b).max()) > 0.1
    assert float(np.abs(a - b).max()) < 1e-4


@pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)
def test_bf16_runs_in_bf16_close_to_fp32_and_says_on_what(encoder_onnx):
    bf, fp = CpuSession(str(encoder_onnx), BF16, ONNXRUNTIME), CpuSession(str(encoder_onnx), FP32, OPENVINO)
    assert bf.runtime.startswith("openvino ") and " bf16 on " in bf.runtime  # bf16 is OpenVINO's, whatever asked
    x = _image(1)
    a, b = bf.run(["image_embeddings"], {"images": x})[0], fp.run(["image_embeddings"], {"images": x})[0]
    rel = float(np.abs(a - b).max() / np.abs(b).max())
    assert 1e-5 < rel < 0.05, rel  # not fp32 (it differs), and not broken


NO_OPENVINO = """
import sys
sys.modules["openvino"] = None  # unimportable
from samserve.triton.cpu_runtime import Bf16Unavailable, CpuSession
s = CpuSession(sys.argv[1], "fp32", "openvino")
print(s.runtime)
try:
    CpuSession(sys.argv[1], "bf16", "openvino")
except Bf16Unavailable as exc:
    print("refused:", exc)
"""


def test_without_openvino_fp32_falls_back_and_says_so_and_bf16_is_refused(encoder_onnx):
    out = subprocess.run(
        [sys.executable, "-c", NO_OPENVINO, str(encoder_onnx)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0].startswith("onnxruntime ") and "openvino unavailable" in out[0]
    assert out[1].startswith("refused:") and "Serve this model in fp32" in out[1]


CAPPED_ISA = """
import sys, numpy as np
from samserve.triton.cpu_runtime import Bf16Unavailable, CpuSession
s = CpuSession(sys.argv[1], "fp32", "openvino")
x = np.random.default_rng(0).standard_normal((1, 3, 256, 256)).astype(np.float32)
print(s.runtime, float(np.abs(s.run(["image_embeddings"], {"images": x})[0]).max()) > 0)
try:
    CpuSession(sys.argv[1], "bf16", "openvino")
    print("bf16 served")
except Bf16Unavailable as exc:
    print("refused:", exc)
"""


def test_a_cpu_without_bf16_still_serves_fp32_and_refuses_bf16(encoder_onnx):
    """oneDNN capped at AVX2 (no AMX, no AVX512-BF16), as on an older Xeon: fp32 runs in
    OpenVINO; bf16 cannot be compiled and the session refuses, saying why."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run(
        [sys.executable, "-c", CAPPED_ISA, str(encoder_onnx)], capture_output=True, text=True, env=env, check=True
    ).stdout.splitlines()
    assert out[0].startswith("openvino ") and out[0].endswith("fp32 True")
    assert out[1].startswith("refused:") and "bf16" in out[1], out


def test_bf16_hardware_reads_the_flags(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert bf16_hardware({"avx512f", "amx_bf16", "avx512_bf16"}) == "AMX"
    assert bf16_hardware({"avx512f", "avx512_bf16"}) == "AVX512-BF16"
    assert bf16_hardware({"avx2"}) == ""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert bf16_hardware({"amx_bf16"}) == "AMX (ISA capped at AVX2)"


def test_an_unknown_precision_or_runtime_is_refused(encoder_onnx):
    with pytest.raises(ValueError, match="precision"):
        CpuSession(str(encoder_onnx), "fp16", OPENVINO)
    with pytest.raises(ValueError, match="cpu_runtime"):
        CpuSession(str(encoder_onnx), FP32, "tvm")
    assert issubclass(Bf16Unavailable, RuntimeError)
