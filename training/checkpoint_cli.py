"""The command line that widen, deepen and resize_input share: a small checkpoint in, a rewritten
one out (both in save_small_checkpoint's format)."""

from __future__ import annotations

import argparse
from pathlib import Path


def checkpoint_parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="the small checkpoint to read")
    p.add_argument("dst", type=Path, help="where to write the rewritten one")
    return p
