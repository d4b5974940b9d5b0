"""samserve serve | embed | segment | build"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path

log = logging.getLogger("samserve")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- serve -------------------------------------------------------------------------------
# The embedded default: a small SAM trained on synthetic shapes (training/train.py, models/MODEL_CARD.md).
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[3] / "models" / "sam_small_shapes.pth"


def _prepare_repository(settings) -> tuple[Path, str]:
    """The CPU model repository for the configured model, built once into the cache dir.
    Returns (repository, what is served)."""
    from build_engines.models import build_small_sam, load_checkpoint
    from build_engines.repository import is_complete, write_cpu_repository
    from samserve.contract import checkpoint_model_id, served_model_id

    repos = settings.cache_dir / "repositories"
    if settings.models:
        return _prepare_models_repository(settings.models, repos, settings.precision), "models"
    precision = settings.precision  # what is asked: the repository under its name may be fp32 (the gate)
    checkpoint, model_type = settings.checkpoint, settings.model_type
    if checkpoint is None and DEFAULT_CHECKPOINT.is_file():
        checkpoint, model_type = DEFAULT_CHECKPOINT, "small"
    if checkpoint is None:
        loaded = build_small_sam()
        out = repos / served_model_id(loaded.model_id, "cpu", precision)
        if not is_complete(out):
            write_cpu_repository(loaded, out, precision=precision)
        return out, "random"
    out = repos / served_model_id(checkpoint_model_id(model_type, checkpoint), "cpu", precision)
    if not is_complete(out):
        log.info("exporting %s to ONNX (once; cached in %s)", checkpoint, out)
        write_cpu_repository(load_checkpoint(checkpoint, model_type), out, precision=precision)
    return out, "default" if checkpoint == DEFAULT_CHECKPOINT else "checkpoint"


def _prepare_models_repository(specs: list[str], repos: Path, precision: str = "fp32") -> Path:
    """One CPU repository serving every NAME=CHECKPOINT[:TYPE][@PRECISION] (the first the
    default; `precision` for those that name none)."""
    import hashlib

    from build_engines.models import load_checkpoint
    from build_engines.repository import is_complete, write_cpu_repositories
    from samserve.contract import checkpoint_model_id, parse_model_spec, served_model_id, spec_precision

    parsed = [parse_model_spec(s) for s in specs]
    asked = {name: spec_precision(s)[1] or precision for s, (name, _, _) in zip(specs, parsed, strict=True)}
    ids = [f"{name}={served_model_id(checkpoint_model_id(t, c), 'cpu', asked[name])}" for name, c, t in parsed]
    out = repos / f"models-{hashlib.sha256(' '.join(ids).encode()).hexdigest()[:16]}"
    if not is_complete(out):
        log.info("exporting %s to ONNX (once; cached in %s)", ", ".join(ids), out)
        loaded = [(name, load_checkpoint(c, t)) for name, c, t in parsed]
        write_cpu_repositories(loaded, out, precisions=asked)
    return out


async def _serve(settings) -> None:
    from samserve.devtools.embedded_registry import remove_record, stop_stale_servers
    from samserve.devtools.local_servers import record_servers, start_redis, start_triton
    from samserve.gateway.app import start_gateway
    from samserve.gateway.metrics import Metrics

    stack = contextlib.ExitStack()
    registry = settings.cache_dir / "embedded" if settings.embedded else None
    try:
        if registry is not None:
            stop_stale_servers(registry)  # what an earlier serve that did not stop cleanly left running
            repo, served = _prepare_repository(settings)
            hint = "For real images: samserve serve --checkpoint sam_vit_b_01ec64.pth --model-type vit_b"
            if served == "default":
                log.warning(
                    "serving the embedded default: a small SAM trained on synthetic shapes (%s). It segments "
                    "simple shapes on plain or textured backgrounds, not natural images. %s",
                    DEFAULT_CHECKPOINT,
                    hint,
                )
            elif served == "random":
                log.warning("serving a small DEMO model with RANDOM weights: masks are not meaningful. %s", hint)
            redis = start_redis()  # the embedding cache: allkeys-lru
            stack.callback(redis.stop)
            record_servers(registry, [redis])
            state = start_redis(maxmemory="2gb", extra_args=["--maxmemory-policy", "noeviction"])
            stack.callback(state.stop)  # locks and kept logits: never evicted
            record_servers(registry, [redis, state])
            triton = start_triton(repo, settings.cache_dir / "logs" / "tritonserver.log", settings.cache_dir)
            stack.callback(triton.stop)
            record_servers(registry, [redis, state, triton])
            urls = {"redis_url": redis.url, "state_redis_url": state.url, "triton_url": triton.grpc_url}
            settings = settings.model_copy(update=urls)
            log.info("Triton log: %s", triton.log_path)
        metrics = Metrics()
        if settings.metrics_enabled:
            from prometheus_client import start_http_server

            start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry)
            log.info("Prometheus metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)
        gateway = await start_gateway(settings, metrics)
        print(f"samserve listening on {settings.host}:{gateway.port} (gRPC samserve.v1.SegmentAnything)", flush=True)
        if gateway.http_port is not None:
            scheme = "https" if settings.tls_cert_file else "http"
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            url = f"{scheme}://{host}:{gateway.http_port}"
            print(f"HTTP/JSON API on {url}/v1/ (schema {url}/openapi.json); the page: {url}/", flush=True)
        print("Ctrl-C stops everything", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        await gateway.stop()
    finally:
        stack.close()
        if registry is not None:  # only once every server stopped: one that did not stays on record
            remove_record(registry)


def _settings_from(args):
    from pydantic import ValidationError

    from samserve.gateway.settings import Settings

    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        sys.exit(f"invalid settings:\n{exc}")


# -- client commands ---------------------------------------------------------------------
def _parse_point(text: str) -> tuple[float, float, int]:
    parts = text.split(",")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"point must be X,Y or X,Y,LABEL, got {text!r}")
    return float(parts[0]), float(parts[1]), int(parts[2]) if len(parts) == 3 else 1


def _parse_box(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"box must be X0,Y0,X1,Y1, got {text!r}")
    return tuple(float(p) for p in parts)  # type: ignore[return-value]


def _segment(args) -> None:
    import grpc
    import numpy as np
    from PIL import Image

    from samserve.client import PromptSpec, SamClient
    from samserve.client.overlay import overlay
    from samserve.core.image import decode_image

    data = Path(args.image).read_bytes()
    prompt = PromptSpec(
        points=[(x, y) for x, y, _ in args.point], labels=[lab for _, _, lab in args.point], box=args.box
    )
    with SamClient(args.server) as client:
        try:
            seg = client.segment(data, [prompt], multimask_output=not args.single, model=args.model)
        except grpc.RpcError as exc:
            sys.exit(f"{exc.code().name}: {exc.details()}")
    result = seg.prompts[0]
    best = int(np.argmax(result.iou_predictions))
    mask = result.mask(best)
    Image.fromarray(mask.astype(np.uint8) * 255).save(args.out)
    overlay_path = args.overlay or str(Path(args.out).with_name(Path(args.out).stem + "_overlay.png"))
    rgb = decode_image(data, max_pixels=1 << 62, min_side=1)
    overlay(rgb, [mask], args.point, args.box).save(overlay_path)
    print(
        f"mask {args.out} ({int(mask.sum())} pixels, predicted IoU {result.iou_predictions[best]:.3f}); "
        f"overlay {overlay_path}; image_id {seg.image_id}{' (cached)' if seg.cached else ''}"
    )


def _amg(args) -> None:
    import grpc

    from samserve.client import SamClient
    from samserve.client.overlay import overlay
    from samserve.core.image import decode_image

    data = Path(args.image).read_bytes()
    options = {
        k: getattr(args, k)
        for k in (
            "points_per_side",
            "pred_iou_thresh",
            "stability_score_thresh",
            "crop_n_layers",
            "min_mask_region_area",
            "use_m2m",
            "mask_threshold",
        )
        if getattr(args, k) is not None
    }
    from samserve.client.sdk import amg_records_from_pb
    from samserve.v1 import samserve_pb2 as pb

    fmt = pb.MASK_FORMAT_POLYGONS if args.polygons else pb.MASK_FORMAT_COCO_RLE
    with SamClient(args.server, timeout_s=None) as client:
        try:
            response = client.generate_masks_pb(data, output_format=fmt, model=args.model, **options)
        except grpc.RpcError as exc:
            sys.exit(f"{exc.code().name}: {exc.details()}")
    records = amg_records_from_pb(response)
    records.sort(key=lambda r: r.area, reverse=True)  # small masks drawn last stay visible
    rgb = decode_image(data, max_pixels=1 << 62, min_side=1)
    overlay(rgb, [r.segmentation for r in records]).save(args.out)
    written = f"; overlay {args.out}"
    if args.coco:
        import json

        from samserve.client.coco import coco_document

        size = (response.original_size.height, response.original_size.width)
        doc = coco_document(records, size, Path(args.image).name, polygons=args.polygons)
        Path(args.coco).write_text(json.dumps(doc))
        written += f"; COCO JSON {args.coco} ({'polygons' if args.polygons else 'RLE'})"
    print(f"{len(records)} masks{written}")


def _bench(args) -> None:
    from tqdm import tqdm

    from samserve.core.image import decode_image
    from samserve.devtools.bench_report import write_report
    from samserve.devtools.loadgen import LoadGenerator

    image = Path(args.image).read_bytes()
    h, w = decode_image(image, max_pixels=1 << 62, min_side=1).shape[:2]
    ca = Path(args.tls_ca).read_bytes() if args.tls_ca else None
    gen = LoadGenerator(
        args.server,
        image,
        (w / 2, h / 2),
        token=args.token,
        timeout_s=args.timeout,
        amg_points=args.amg_points,
        root_certificates=ca,
    )
    runs = [(rpc, cache, c) for rpc in args.rpc for cache in args.cache for c in args.concurrency]
    results = []
    with tqdm(total=len(runs), desc="bench", unit="run") as bar:
        for rpc, cache, c in runs:
            bar.set_postfix_str(f"{rpc} {cache} c={c}")
            with tqdm(desc=f"  {rpc} {cache} c={c}", unit="req", leave=False) as reqs:
                results.append(asyncio.run(gen.run(rpc, cache, c, args.duration, args.mode, args.rate, reqs.update)))
            bar.update()
    report, images = write_report(results, Path(args.out), f"samserve bench against {args.server}")
    print(report.read_text())
    print(f"report {report}; plots {', '.join(str(p) for p in images)}")


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}


def _image_files(paths: list[str]) -> list[Path]:
    """Files as given; directories walked (sorted) for the image suffixes the API takes."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    return files


def _embed(args) -> None:
    import grpc

    from samserve.client import SamClient

    files = _image_files(args.images)
    if not files:
        sys.exit("no images: give image files or folders holding them")
    if len(files) == 1 and args.concurrency is None:
        with SamClient(args.server) as client:
            try:
                r = client.embed(files[0].read_bytes(), model=args.model)
            except grpc.RpcError as exc:
                sys.exit(f"{exc.code().name}: {exc.details()}")
        print(
            f"image_id {r.image_id} size {r.original_size.width}x{r.original_size.height} cached {r.cached} "
            f"model {r.model_id}"
        )
        return
    _embed_many(args, files)


def _embed_many(args, files: list[Path]) -> None:
    """EmbedMany with a progress bar: a line per failed image, a summary at the end."""
    import time

    import grpc

    from samserve.client import SamClient

    try:
        from tqdm import tqdm
    except ImportError:  # the base install has no tqdm: a plain count
        tqdm = None
    bar = tqdm(total=len(files), unit="img", desc="embed") if tqdm else None
    counts = {"embedded": 0, "cached": 0, "failed": 0}
    started = time.perf_counter()
    with SamClient(args.server, timeout_s=None) as client:
        try:
            images = (f.read_bytes() for f in files)
            for r in client.embed_many(images, window=args.concurrency or 8, model=args.model):
                if r.status == "OK":
                    counts["cached" if r.embedded.cached else "embedded"] += 1
                else:
                    counts["failed"] += 1
                    (bar.write if bar else print)(f"{files[r.index]}: {r.status}: {r.message}")
                if bar:
                    bar.update()
        except grpc.RpcError as exc:
            sys.exit(f"{exc.code().name}: {exc.details()}")
        finally:
            if bar:
                bar.close()
    seconds = time.perf_counter() - started
    print(
        f"{len(files)} images in {seconds:.1f} s ({len(files) / seconds:.2f} images/s): {counts['embedded']} embedded, "
        f"{counts['cached']} already cached, {counts['failed']} failed"
    )
    if counts["failed"]:
        sys.exit(1)


def _serve_parser(sub) -> None:
    from samserve.contract import MODEL_TYPES

    s = sub.add_parser("serve", help="run the gateway (by default with local Redis and Triton)")
    s.add_argument(
        "--checkpoint", type=Path, help="SAM checkpoint, e.g. sam_vit_b_01ec64.pth (default: the small shapes model)"
    )
    s.add_argument("--model-type", dest="model_type", choices=MODEL_TYPES)
    s.add_argument(
        "--precision",
        dest="precision",
        choices=["fp32", "bf16"],
        help="what the models compute in (default fp32); bf16: OpenVINO on AMX / AVX512-BF16, built when the model "
        "passes the accuracy gate, else fp32 (logged). One model's: NAME=CHECKPOINT[:TYPE]@bf16",
    )
    s.add_argument(
        "--model",
        dest="models",
        action="append",
        metavar="NAME=CHECKPOINT[:TYPE][@PRECISION]",
        help="serve several models, each under NAME (repeat; the first is the default)",
    )
    s.add_argument(
        "--models-file",
        dest="models_file",
        type=Path,
        help="several models from a file: one NAME=CHECKPOINT[:TYPE] a line (# comments), the first the default",
    )
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--http-port", dest="http_port", type=int, help="HTTP/JSON API and the page (default 8080)")
    s.add_argument("--no-http", dest="http_enabled", action="store_const", const=False, help="serve gRPC only")
    s.add_argument("--metrics-port", dest="metrics_port", type=int)
    s.add_argument(
        "--no-embedded",
        dest="embedded",
        action="store_const",
        const=False,
        help="use --triton-url / --redis-url instead of starting local servers",
    )
    s.add_argument("--triton-url", dest="triton_url")
    s.add_argument("--redis-url", dest="redis_url")
    s.add_argument("--cache-dir", dest="cache_dir", type=Path)
    s.add_argument("--log-level", dest="log_level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _client_parsers(sub) -> None:
    e = sub.add_parser("embed", help="embed images (files or folders; several: EmbedMany with a progress bar)")
    e.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    e.add_argument("--concurrency", type=int, help="images in flight at once (default 8; the server caps it)")
    e.add_argument("--server", default="127.0.0.1:50051")
    e.add_argument("--model", default="", help="a model of the deployment (default: its default)")

    g = sub.add_parser("segment", help="segment an image from point/box prompts; write mask and overlay PNGs")
    g.add_argument("image")
    g.add_argument("--point", type=_parse_point, action="append", default=[], help="X,Y[,LABEL] (label 1 or 0)")
    g.add_argument("--box", type=_parse_box, help="X0,Y0,X1,Y1")
    g.add_argument("--out", default="mask.png")
    g.add_argument("--overlay", help="overlay PNG (default: <out>_overlay.png)")
    g.add_argument("--single", action="store_true", help="multimask_output=false")
    g.add_argument("--server", default="127.0.0.1:50051")
    g.add_argument("--model", default="", help="a model of the deployment (default: its default)")

    a = sub.add_parser("amg", help="segment everything (automatic mask generation); write an overlay PNG")
    a.add_argument("image")
    a.add_argument("--out", default="amg.png")
    a.add_argument("--coco", metavar="FILE", help="also write the records as a COCO JSON document")
    a.add_argument(
        "--polygons",
        action="store_true",
        help="COCO segmentations as polygons (MASK_FORMAT_POLYGONS; COCO polygons drop holes) instead of RLE",
    )
    a.add_argument("--points-per-side", dest="points_per_side", type=int)
    a.add_argument("--pred-iou-thresh", dest="pred_iou_thresh", type=float)
    a.add_argument("--stability-score-thresh", dest="stability_score_thresh", type=float)
    a.add_argument("--crop-n-layers", dest="crop_n_layers", type=int)
    a.add_argument("--min-mask-region-area", dest="min_mask_region_area", type=int)
    a.add_argument("--use-m2m", dest="use_m2m", action="store_const", const=True, help="SAM 2: mask-to-mask refinement")
    a.add_argument("--mask-threshold", dest="mask_threshold", type=float, help="SAM 2: the logits' threshold")
    a.add_argument("--server", default="127.0.0.1:50051")
    a.add_argument("--model", default="", help="a model of the deployment (default: its default)")


def _bench_parser(sub) -> None:
    def csv(kind):
        return lambda text: [kind(v) for v in text.split(",") if v]

    n = sub.add_parser("bench", help="load-test a running deployment; Markdown report and PNG plots")
    n.add_argument("image", help="the image every request sends")
    n.add_argument("--server", default="127.0.0.1:50051")
    n.add_argument("--rpc", type=csv(str), default=["segment"], help="embed,segment,generate_masks")
    n.add_argument("--cache", type=csv(str), default=["hit", "miss"], help="hit,miss")
    n.add_argument("--concurrency", type=csv(int), default=[1, 2, 4, 8])
    n.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    n.add_argument("--mode", choices=["closed", "open"], default="closed")
    n.add_argument("--rate", type=float, help="open loop: requests per second")
    n.add_argument("--amg-points", dest="amg_points", type=int, default=8, help="generate_masks points_per_side")
    n.add_argument("--timeout", type=float, default=120.0)
    n.add_argument("--token")
    n.add_argument("--tls-ca", dest="tls_ca", help="CA certificate (PEM) for a TLS gateway")
    n.add_argument("--out", default="bench-report")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="samserve", description="Segment Anything over gRPC")
    sub = p.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _client_parsers(sub)
    _bench_parser(sub)
    b = sub.add_parser("build", help="write a model repository (python -m build_engines)")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    return p


def main(argv: list[str] | None = None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    if args.command == "serve":
        if args.models_file is not None:
            from samserve.contract import read_models_file

            try:
                args.models = [*(args.models or []), *read_models_file(args.models_file)]
            except (OSError, ValueError) as exc:
                p.error(f"--models-file: {exc}")
        if args.models and (args.checkpoint or args.model_type):
            p.error("--model NAME=CHECKPOINT[:TYPE] serves several models; leave out --checkpoint/--model-type")
        settings = _settings_from(args)
        _configure_logging(settings.log_level)
        asyncio.run(_serve(settings))
    elif args.command == "build":
        from build_engines.__main__ import main as build_main

        build_main(args.rest)
    else:
        _configure_logging("WARNING")
        if args.command == "segment" and not args.point and args.box is None:
            p.error("segment needs at least one --point or a --box")
        {"embed": _embed, "segment": _segment, "amg": _amg, "bench": _bench}[args.command](args)


if __name__ == "__main__":
    main()
