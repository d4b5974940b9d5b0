"""python -m build_engines --out DIR [--target cpu|gpu] [--checkpoint sam_vit_b_01ec64.pth --model-type vit_b]
python -m build_engines --out DIR [--target cpu|gpu] --model NAME=CHECKPOINT[:TYPE][@PRECISION] ... | --models-file FILE

Several models (--model, repeated, or a models file: one NAME=CHECKPOINT[:TYPE][@PRECISION] a
line) go into one repository, each model's Triton models under "<NAME>__"; the first is the
default. --precision is every model's that names none (cpu: fp32, the default, or bf16, which
must pass the accuracy gate here and else is built in fp32, saying why; gpu: fp16).
--keyed-out DIR writes DIR/models-<digest of the inputs> instead of --out (deployments: with
--if-stale, a checkpoint replaced in place is another digest, so it is built anew).

cpu: ONNX models served by OpenVINO (ONNX Runtime where it fails) in python-backend models (runs anywhere).
gpu: TensorRT FP16 plans (needs an NVIDIA GPU and the tensorrt package; see gpu_repository.py).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from build_engines.models import build_small_sam, load_checkpoint
from build_engines.output_dir import inputs_sha256, locked
from build_engines.repository import is_current, write_cpu_repositories
from build_engines.tensorrt_engines import DEFAULT_FP32_LAYER_TYPES, EngineLimits
from samserve.contract import (
    MODEL_TYPES,
    PRECISIONS,
    REPOSITORY_LAYOUT,
    TARGETS,
    parse_model_spec,
    read_models_file,
    spec_precision,
)

log = logging.getLogger("build_engines")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m build_engines", description=__doc__)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", type=Path, help="model repository to write")
    out.add_argument(
        "--keyed-out",
        type=Path,
        metavar="DIR",
        help="write the repository to DIR/models-<digest of the build's inputs, checkpoints' bytes included>",
    )
    p.add_argument("--path-file", type=Path, help="write the repository's path here when it is ready (deployments)")
    p.add_argument("--target", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--checkpoint", type=Path, help="SAM checkpoint (.pth); omit for a small model with random weights")
    p.add_argument("--model-type", choices=MODEL_TYPES, default="vit_b")
    p.add_argument(
        "--precision",
        choices=sorted({p for ps in PRECISIONS.values() for p in ps}),
        help="what every model that names none (NAME=...@PRECISION) computes in (cpu: fp32 or bf16, gated; "
        "gpu: fp16); default: the target's (cpu fp32, gpu fp16)",
    )
    p.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME=CHECKPOINT[:TYPE]",
        help="a model of a repository of several (repeat; the first is the default)",
    )
    p.add_argument("--models-file", type=Path, help="the models, one NAME=CHECKPOINT[:TYPE] a line")
    p.add_argument("--small-img-size", type=int, default=256, help="input size S of the small demo model")
    p.add_argument("--seed", type=int, default=0, help="weights seed of the small demo model")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |ONNX - PyTorch| accepted")
    p.add_argument(
        "--if-stale",
        action="store_true",
        help="build only when the output holds no finished repository of this version's layout built from the "
        "same inputs (checkpoints' sha256, target, options); deployments",
    )
    gpu = p.add_argument_group("gpu target")
    gpu.add_argument("--encoder-max-batch", type=int, default=EngineLimits.encoder_max_batch)
    gpu.add_argument("--decoder-max-prompts", type=int, default=EngineLimits.decoder_max_prompts)
    gpu.add_argument("--decoder-max-points", type=int, default=EngineLimits.decoder_max_points)
    gpu.add_argument(
        "--fp32-layers",
        default=",".join(DEFAULT_FP32_LAYER_TYPES),
        help="TensorRT layer types kept in FP32 (comma-separated trt.LayerType names)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    specs = [*(args.models or []), *(read_models_file(args.models_file) if args.models_file else [])]
    if specs and args.checkpoint:
        p.error("--checkpoint serves one model; with --model / --models-file name each model's checkpoint there")
    precision = args.precision or TARGETS[args.target]
    if specs:
        checkpoints = [parse_model_spec(s) for s in specs]
        precisions = {parse_model_spec(s)[0]: spec_precision(s)[1] or precision for s in specs}
    elif args.checkpoint:
        checkpoints = [(None, args.checkpoint, args.model_type)]
        precisions = {None: precision}
    else:
        checkpoints = [(None, None, "small")]
        precisions = {None: precision}
    for name, asked in precisions.items():
        if asked not in PRECISIONS[args.target]:
            served = " or ".join(PRECISIONS[args.target])
            p.error(f"model {name or 'default'}: the {args.target} target serves {served}, not {asked}")
    options = {"tolerance": args.tolerance, "precisions": [precisions[name] for name, _, _ in checkpoints]}
    if not specs and not args.checkpoint:
        options |= {"small_img_size": args.small_img_size, "seed": args.seed}
    if args.target == "gpu":
        options |= {
            "limits": [args.encoder_max_batch, args.decoder_max_prompts, args.decoder_max_points],
            "fp32_layers": args.fp32_layers,
        }
    inputs = inputs_sha256(checkpoints, args.target, options)
    out = args.out or args.keyed_out / f"models-{inputs[:16]}"
    with locked(out):  # another builder of `out` on this node finishes first; then it may be current
        if args.if_stale and is_current(out, inputs):
            log.info("%s is current (layout %d, inputs %s): not rebuilt", out, REPOSITORY_LAYOUT, inputs[:16])
        else:
            _build(args, checkpoints, out, inputs, precisions)
    if args.path_file:
        args.path_file.write_text(f"{out}\n")


def _build(args, checkpoints, out: Path, inputs: str, precisions: dict) -> None:
    if checkpoints[0][1] is None:
        models = [(None, build_small_sam(img_size=args.small_img_size, seed=args.seed))]
    else:
        models = [(name, load_checkpoint(path, t)) for name, path, t in checkpoints]
    if args.target == "gpu":
        from build_engines.gpu_repository import write_gpu_repositories

        limits = EngineLimits(args.encoder_max_batch, args.decoder_max_prompts, args.decoder_max_points)
        fp32 = tuple(t.strip().upper() for t in args.fp32_layers.split(",") if t.strip())
        write_gpu_repositories(models, out, limits, args.tolerance, fp32, inputs)
    else:
        write_cpu_repositories(models, out, args.tolerance, inputs=inputs, precisions=precisions)


if __name__ == "__main__":
    main()
