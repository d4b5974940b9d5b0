"""The CPU target's inference runtimes for the python-backend models, on the version folder's
ONNX files: OpenVINO (its CPU plugin runs bf16 on AMX or AVX512-BF16 where the CPU has them)
and ONNX Runtime, the fallback.

fp32: OpenVINO when the config's `cpu_runtime` asks for it, else, or when OpenVINO is missing or
cannot compile the model, ONNX Runtime; the two agree within 2e-5 (ENVIRONMENT.md), so the model
id is the same. The choice is logged and every response says it (RUNTIME).

bf16: OpenVINO only, on a CPU whose plugin can compile the model in bf16; anywhere else the model
refuses to load, saying why. It never falls back to fp32: its id says bf16, and its cached
embeddings are bf16's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from samserve.contract import BF16, CPU_RUNTIME, FP32, INTRA_OP_THREADS, ONNXRUNTIME, OPENVINO, PRECISION

log = logging.getLogger(__name__)

OV_PRECISION = {FP32: "f32", BF16: "bf16"}


class Bf16Unavailable(RuntimeError):
    """A bf16 model on a machine that cannot run it in bf16."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_hardware(flags: set[str] | None = None) -> str:
    """What this CPU runs bf16 on: "AMX", "AVX512-BF16", or "" (none: OpenVINO would refuse or
    emulate). ONEDNN_MAX_CPU_ISA, when set, caps what oneDNN may use and is said."""
    flags = cpu_flags() if flags is None else flags
    unit = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else ""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "")
    return f"{unit} (ISA capped at {cap})" if unit and cap else unit


class CpuSession:
    """One ONNX file compiled for the CPU: run(output names, {input: array}) -> arrays, and
    `runtime`, what runs it ("openvino 2026.4.1 bf16 on AMX", "onnxruntime 1.32.0 fp32 ...")."""

    def __init__(self, path: str, precision: str = FP32, runtime: str = OPENVINO, threads: int = 0) -> None:
        if precision not in OV_PRECISION:
            raise ValueError(f"precision must be one of {sorted(OV_PRECISION)}, got {precision!r}")
        if runtime not in (OPENVINO, ONNXRUNTIME):
            raise ValueError(f"cpu_runtime must be {OPENVINO!r} or {ONNXRUNTIME!r}, got {runtime!r}")
        self.path, self.precision = path, precision
        why_not = ""
        if runtime == OPENVINO or precision == BF16:
            try:
                self._openvino(path, precision, threads)
                log.info("%s: %s", path, self.runtime)
                return
            except Exception as exc:  # missing, or cannot compile this model here
                if precision == BF16:
                    raise Bf16Unavailable(
                        f"{path}: bf16 needs OpenVINO and a CPU that runs bf16 (AMX or AVX512-BF16); here: {exc}. "
                        "Serve this model in fp32 (build it with --precision fp32)"
                    ) from None
                why_not = f"; openvino unavailable: {str(exc).splitlines()[0][:200]}"
        self._onnxruntime(path, threads)
        self.runtime += why_not
        (log.warning if why_not else log.info)("%s: %s", path, self.runtime)

    def _openvino(self, path: str, precision: str, threads: int) -> None:
        import openvino as ov

        core = ov.Core()
        if precision == BF16 and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise Bf16Unavailable("the OpenVINO CPU plugin lists no BF16 capability on this CPU")
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(core.read_model(path), "CPU", config)
        got = compiled.get_property("INFERENCE_PRECISION_HINT")
        if precision == BF16 and got != ov.Type.bf16:
            raise Bf16Unavailable(f"OpenVINO compiled it in {got}, not bf16")
        self._request = compiled.create_infer_request()
        self._inputs = {i.get_any_name() for i in compiled.inputs}
        unit = bf16_hardware() if precision == BF16 else ""
        self.runtime = f"openvino {ov.__version__.split('-')[0]} {precision}" + (f" on {unit}" if unit else "")
        self._run = self._run_openvino

    def _onnxruntime(self, path: str, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self._session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.runtime = f"onnxruntime {ort.__version__} fp32"
        self._run = self._run_onnxruntime

    def _run_openvino(self, outputs: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        # share_inputs: the request reads the callers' arrays in place; the outputs are copies
        result = self._request.infer({k: np.ascontiguousarray(v) for k, v in feed.items()}, share_inputs=True)
        return [result[name] for name in outputs]

    def _run_onnxruntime(self, outputs: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(list(outputs), feed)

    def run(self, outputs: Sequence[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self._run(outputs, feed)


def cpu_session(args: dict, params: dict[str, str], name: str = "model.onnx") -> CpuSession:
    """The version folder's `name` with the config's precision, runtime and threads."""
    from samserve.triton.model_config import version_file

    return CpuSession(
        version_file(args, name),
        params.get(PRECISION, FP32),
        params.get(CPU_RUNTIME, ONNXRUNTIME),  # a repository built before OpenVINO says none
        int(params.get(INTRA_OP_THREADS, "0")),
    )
