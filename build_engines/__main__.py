"""python -m build_engines --out DIR [--checkpoint sam_vit_b_01ec64.pth --model-type vit_b]"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from build_engines.models import MODEL_TYPES, build_small_sam, load_checkpoint
from build_engines.repository import write_cpu_repository


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m build_engines", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="model repository to write")
    p.add_argument("--target", choices=["cpu"], default="cpu")
    p.add_argument("--checkpoint", type=Path, help="SAM checkpoint (.pth); omit for a small model with random weights")
    p.add_argument("--model-type", choices=MODEL_TYPES, default="vit_b")
    p.add_argument("--small-img-size", type=int, default=256, help="input size S of the small demo model")
    p.add_argument("--seed", type=int, default=0, help="weights seed of the small demo model")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |ONNX - PyTorch| accepted")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.checkpoint:
        loaded = load_checkpoint(args.checkpoint, args.model_type)
    else:
        loaded = build_small_sam(img_size=args.small_img_size, seed=args.seed)
    write_cpu_repository(loaded, args.out, args.tolerance)


if __name__ == "__main__":
    main()
