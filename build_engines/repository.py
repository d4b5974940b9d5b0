"""Write a complete Triton model repository for a SAM model.

`cpu` target: the checked-in python-backend models of model_repository/ plus the exported
ONNX files, with the model's facts (id, input size S, normalization, precision) written into
each config's `parameters`, where the gateway and the models read them. The models run the ONNX
files through OpenVINO (ONNX Runtime where it fails: triton.cpu_runtime), in fp32 or, for a model
asked for in bf16 that passes the accuracy gate here (engine_accuracy), in bf16. A model asked
for in bf16 that fails the gate, or on a CPU that cannot run bf16, is built in fp32: its id and
the build log say so, and build_info.json keeps why.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from build_engines.export_onnx import export_decoder, export_encoder
from build_engines.models import LoadedSam
from build_engines.output_dir import partial_dir, replace_dir
from build_engines.verify import verify
from samserve.contract import (
    AMG,
    AMG_GENERATE,
    CPU_RUNTIME,
    DECODER,
    DECODER_NOMASK_FILE,
    DEFAULT_RESIDENT_BYTES,
    ENCODER,
    FAMILIES,
    FP32,
    INTRA_OP_THREADS,
    LAYOUT_PARAMETER,
    MODEL_NAME_PATTERN,
    ONNXRUNTIME,
    OPENVINO,
    PRECISION,
    REPOSITORY_LAYOUT,
    RESIDENT_BYTES,
    SAM2,
    SAM2_CONDITIONING,
    TRACKER_CONFIG,
    TRACKER_MODELS,
    ModelInfo,
    model_prefix,
    served_model_id,
)

log = logging.getLogger(__name__)

CHECKED_IN = Path(__file__).resolve().parents[1] / "model_repository"
MODELS = (ENCODER, DECODER, AMG_GENERATE, AMG)
ONNX_MODELS = (ENCODER, DECODER)
BUILD_INFO = "build_info.json"


def export_models(loaded: LoadedSam, encoder_dir: Path, decoder_dir: Path) -> tuple[Path, Path]:
    """The family's ONNX encoder and decoder, as <dir>/1/model.onnx."""
    encoder, decoder = encoder_dir / "1" / "model.onnx", decoder_dir / "1" / "model.onnx"
    for path in (encoder, decoder):
        path.parent.mkdir(parents=True, exist_ok=True)
    if loaded.family == SAM2:
        from build_engines.export_sam2 import export_sam2_decoder, export_sam2_encoder

        return export_sam2_encoder(loaded.sam, encoder), export_sam2_decoder(loaded.sam, decoder)
    return export_encoder(loaded.sam, encoder), export_decoder(loaded.sam, decoder)


def normalisation(loaded: LoadedSam) -> tuple[np.ndarray, np.ndarray, float]:
    """(pixel mean, pixel std, mask threshold): SAM's on the 0-255 scale, SAM 2's on the 0-1
    scale of SAM2Transforms (its predictor's mask_threshold is 0)."""
    if loaded.family == SAM2:
        from build_engines.sam2_models import SAM2_MEAN, SAM2_STD

        return np.asarray(SAM2_MEAN, np.float32), np.asarray(SAM2_STD, np.float32), 0.0
    sam = loaded.sam
    mean = sam.pixel_mean.flatten().numpy().astype(np.float32)
    return mean, sam.pixel_std.flatten().numpy().astype(np.float32), float(sam.mask_threshold)


def model_info(
    loaded: LoadedSam,
    target: str = "cpu",
    name: str | None = None,
    default: bool = True,
    precision: str | None = None,
    tracker: str = "",
) -> ModelInfo:
    """`name`: the model's name in a repository of several (its Triton models under
    "<name>__"); None for a repository of one model (bare names). `precision`: the target's
    default (TARGETS) when None. `tracker`: its TRACKER_CONFIG when it tracks video."""
    mean, std, threshold = normalisation(loaded)
    served = served_model_id(loaded.model_id, target, precision)
    return ModelInfo(
        model_id=served,
        model_type=loaded.model_type,
        img_size=loaded.img_size,
        pixel_mean=mean,
        pixel_std=std,
        mask_threshold=threshold,
        family=FAMILIES[loaded.model_type],
        name=name or "default",
        prefix=model_prefix(name),
        is_default=default,
        precision=served.rsplit("-", 1)[-1],
        runtime=OPENVINO if target == "cpu" else "tensorrt",
        tracker_config=tracker,
    )


def model_parameters(
    loaded: LoadedSam,
    target: str = "cpu",
    intra_op_threads: int = 0,
    name: str | None = None,
    default: bool = True,
    precision: str | None = None,
    tracker: str = "",
) -> dict[str, str]:
    """The config parameters of every model of one model's set: the ModelInfo contract (its
    model_id names the target and precision) and the python-backend models' knobs."""
    info = model_info(loaded, target, name, default, precision, tracker)
    return {
        **info.to_parameters(),
        **({CPU_RUNTIME: info.runtime} if target == "cpu" else {}),
        INTRA_OP_THREADS: str(intra_op_threads),
        RESIDENT_BYTES: str(DEFAULT_RESIDENT_BYTES),
        LAYOUT_PARAMETER: str(REPOSITORY_LAYOUT),
    }


def prefixed_config(text: str, prefix: str) -> str:
    """A config with its model's name, and an ensemble's step models, under `prefix`."""
    if not prefix:
        return text
    text = re.sub(r'^name: "([^"]+)"', lambda m: f'name: "{prefix}{m.group(1)}"', text, count=1, flags=re.M)
    return re.sub(r'model_name: "([^"]+)"', lambda m: f'model_name: "{prefix}{m.group(1)}"', text)


EMBEDDING_DIMS = "dims: [ 256, -1, -1 ]"  # the image_embeddings tensors of the checked-in configs


def embedding_dims(text: str, channels: int) -> str:
    """A config with its image_embeddings' channel count that of the model (SAM 2: packed, 1024)."""
    return text.replace(EMBEDDING_DIMS, f"dims: [ {channels}, -1, -1 ]")


def parameters_block(params: dict[str, str]) -> str:
    lines = [
        f"parameters {{ key: {json.dumps(k)} value {{ string_value: {json.dumps(v)} }} }}" for k, v in params.items()
    ]
    return "\n# written by build_engines\n" + "\n".join(lines) + "\n"


def built_layout(out: Path) -> int | None:
    """The repository layout `out` was built with (None: no finished build there)."""
    try:
        return int(json.loads((out / BUILD_INFO).read_text()).get("repository_layout", 1))
    except (OSError, ValueError):
        return None


def built_inputs(out: Path) -> str | None:
    """The inputs digest (output_dir.inputs_sha256) `out` was built from (None: none recorded)."""
    try:
        return json.loads((out / BUILD_INFO).read_text()).get("inputs_sha256")
    except (OSError, ValueError):
        return None


def is_current(out: Path, inputs: str | None = None) -> bool:
    """A finished repository of this version's layout (any target) is at `out`, and, when
    `inputs` is given, built from those inputs (output_dir.inputs_sha256)."""
    return built_layout(out) == REPOSITORY_LAYOUT and (inputs is None or built_inputs(out) == inputs)


def is_complete(out: Path) -> bool:
    """A finished CPU repository of this layout is at `out`, every model's ONNX files with it."""
    if not is_current(out):
        return False
    info = json.loads((out / BUILD_INFO).read_text())
    models = info.get("models") or {None: info}
    files = [(m, "model.onnx") for m in ONNX_MODELS] + [(DECODER, DECODER_NOMASK_FILE)]
    tracker = [(m, "model.onnx") for m in TRACKER_MODELS]
    return all(
        (out / (model_prefix(n) + m) / "1" / f).is_file()
        for n, facts in models.items()
        for m, f in files + (tracker if facts.get("tracks_video") else [])
    )


def check_model_names(names: list[str | None]) -> None:
    """Several models need distinct names that cannot collide as prefixes; one may have none."""
    if len(names) > 1 and (None in names or len(set(names)) != len(names)):
        raise ValueError(f"several models need distinct names, got {names}")
    for n in names:
        if n is not None and not re.fullmatch(MODEL_NAME_PATTERN, n):
            raise ValueError(f"model name {n!r} must match {MODEL_NAME_PATTERN} (lowercase, digits, '-')")


def write_cpu_repository(
    loaded: LoadedSam, out: Path, tolerance: float = 1e-3, intra_op_threads: int = 0, precision: str = FP32
) -> Path:
    """Exports, verifies against PyTorch (raises VerificationError past `tolerance`) and
    writes the repository of one model to `out`, replacing what was there."""
    return write_cpu_repositories([(None, loaded)], out, tolerance, intra_op_threads, precisions={None: precision})


def write_tracker(loaded: LoadedSam, tmp: Path, prefix: str, tolerance: float) -> tuple[str, dict]:
    """A SAM 2 model's video tracker (contract.TRACKER_MODELS), exported from its video
    predictor and verified: (its TRACKER_CONFIG, what the build records). A model whose config
    the tracker does not serve is built without it: ("", why)."""
    from build_engines.export_sam2_tracking import export_tracking_graphs, tracker_config, verify_tracking_graphs
    from build_engines.sam2_models import video_predictor_of

    video = video_predictor_of(loaded)
    try:
        config = tracker_config(video)
    except ValueError as exc:
        log.warning("%s serves images only, no video tracking: %s", loaded.model_id, exc)
        return "", {"tracking_refused": str(exc)}
    work = tmp / f".{prefix}tracker-export"
    try:
        paths = export_tracking_graphs(video, work)
        worst = verify_tracking_graphs(video, paths, tolerance)
        for name, path in paths.items():
            shutil.copytree(CHECKED_IN / name, tmp / (prefix + name), ignore=shutil.ignore_patterns("__pycache__"))
            path.replace(tmp / (prefix + name) / "1" / "model.onnx")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return config, {"tracking_verification": worst}


def tracker_parameters(params: dict[str, str], model: str) -> dict[str, str]:
    """The tracker's models run in fp32 whatever the encoder's precision (the exact path): the
    memory attention in OpenVINO (hiera_t, 7 memories: 2.7 s a call against ONNX Runtime's 3.6),
    the decoder and the memory encoder in ONNX Runtime (31 and 70 ms; as fast)."""
    runtime = OPENVINO if model == SAM2_CONDITIONING else ONNXRUNTIME
    return {**params, PRECISION: FP32, CPU_RUNTIME: runtime}


def runtime_of(model: str, precision: str) -> dict[str, str]:
    """A CPU model's runtime, where it is not the set's (OpenVINO): the fp32 decoders run in ONNX
    Runtime, which is faster for them here (ViT-B's decoder, 4 prompts: 54 ms against OpenVINO's
    69; its bf16 36 ms), while OpenVINO is faster for every encoder (5.8 s against 6.8 for ViT-B)."""
    return {CPU_RUNTIME: ONNXRUNTIME} if model == DECODER and precision == FP32 else {}


def cpu_precision(loaded: LoadedSam, encoder: Path, decoder: Path, asked: str) -> tuple[str, dict]:
    """The precision a CPU model is served in, and what decided it: fp32 as asked; bf16 when
    this CPU runs it and it passes the accuracy gate, else fp32 (logged with why)."""
    if asked == FP32:
        return FP32, {}
    from build_engines.engine_accuracy import EngineAccuracyError, check_cpu_models

    try:
        report = check_cpu_models(loaded, encoder, decoder, asked)
    except EngineAccuracyError as exc:
        log.warning("%s is built in fp32, not %s: %s", loaded.model_id, asked, exc)
        return FP32, {"precision_asked": asked, "precision_refused": str(exc)}
    return asked, {"precision_asked": asked, "accuracy_gate": asdict(report)}


def build_info(target: str, infos: dict, inputs: str | None, **extra) -> dict:
    """BUILD_INFO's content: the layout, the target, the inputs digest, and each model's facts
    (at the top for a repository of one model, under "models" for several)."""
    info = {**(infos[None] if list(infos) == [None] else {"models": infos}), "target": target, **extra}
    return {**info, "repository_layout": REPOSITORY_LAYOUT, "inputs_sha256": inputs}


def write_cpu_repositories(
    models: list[tuple[str | None, LoadedSam]],
    out: Path,
    tolerance: float = 1e-3,
    intra_op_threads: int = 0,
    inputs: str | None = None,
    precisions: dict[str | None, str] | None = None,
) -> Path:
    """One repository serving several models: each model's set under "<name>__" (None: one
    model, bare names); the first is the default. Each is exported and verified. `inputs`: the
    build's inputs digest, recorded for --if-stale. `precisions`: name -> the precision asked
    for (fp32 when not named; bf16 is gated: cpu_precision)."""
    names = [n for n, _ in models]
    check_model_names(names)
    tmp = partial_dir(out)
    try:
        infos = {}
        for i, (name, loaded) in enumerate(models):
            prefix = model_prefix(name)
            for model in MODELS:
                shutil.copytree(
                    CHECKED_IN / model, tmp / (prefix + model), ignore=shutil.ignore_patterns("__pycache__", "*.onnx")
                )
            encoder, decoder = export_models(loaded, tmp / (prefix + ENCODER), tmp / (prefix + DECODER))
            report = verify(loaded.sam, encoder, decoder, tolerance, loaded.family)
            precision, decided = cpu_precision(loaded, encoder, decoder, (precisions or {}).get(name, FP32))
            tracker, tracking = write_tracker(loaded, tmp, prefix, tolerance) if loaded.family == SAM2 else ("", {})
            params = model_parameters(
                loaded, "cpu", intra_op_threads, name, default=i == 0, precision=precision, tracker=tracker
            )
            info = model_info(loaded, "cpu", name, default=i == 0, precision=precision)
            for model in MODELS:
                config = tmp / (prefix + model) / "config.pbtxt"
                text = embedding_dims(prefixed_config(config.read_text(), prefix), info.embedding_channels)
                config.write_text(text + parameters_block({**params, **runtime_of(model, precision)}))
            for model in TRACKER_MODELS if tracker else ():
                config = tmp / (prefix + model) / "config.pbtxt"
                config.write_text(
                    prefixed_config(config.read_text(), prefix) + parameters_block(tracker_parameters(params, model))
                )
            infos[name] = {
                **{k: v for k, v in params.items() if k != TRACKER_CONFIG},
                "tracks_video": bool(tracker),
                "random_weights": loaded.random_weights,
                "verification": asdict(report),
                **decided,
                **tracking,
            }
        info = build_info("cpu", infos, inputs, tolerance=tolerance)
        (tmp / BUILD_INFO).write_text(json.dumps(info, indent=2) + "\n")
        replace_dir(tmp, out)  # a half-written repository is never left under the final name
    except BaseException:  # a failed build leaves nothing behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote CPU model repository for %s to %s", ", ".join(loaded.model_id for _, loaded in models), out)
    return out
