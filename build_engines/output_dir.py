"""Where a build writes: a lock per output directory (builders on one node, e.g. two init
containers on a hostPath, take turns), a partial directory of the builder's own beside it, and
the finished one swapped in by renames, so a reader never sees a half-written repository and no
builder deletes another's work. A key of the build's inputs names what a directory holds."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from samserve import __version__
from samserve.contract import REPOSITORY_LAYOUT, sha256_file

log = logging.getLogger(__name__)


def inputs_sha256(checkpoints: list[tuple[str | None, Path | None, str]], target: str, options: dict) -> str:
    """The build's inputs as one digest: this version's layout and package version, the target,
    the options that shape the models (tolerances, engine limits, a random model's seed), and per
    model its name, type and the sha256 of its checkpoint's bytes (None: built from `options`).
    A checkpoint replaced in place under the same name is another build."""
    described = {
        "repository_layout": REPOSITORY_LAYOUT,
        "samserve": __version__,
        "target": target,
        "options": options,
        "models": [
            {"name": name, "type": model_type, "sha256": None if path is None else sha256_file(path)}
            for name, path, model_type in checkpoints
        ],
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Holds `<out>.lock` (flock: released by the kernel when a builder dies) while building `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another build of %s is running: waiting for it", out)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def partial_dir(out: Path) -> Path:
    """A new, empty directory beside `out` that only this builder writes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{out.name}.partial-"))


def replace_dir(tmp: Path, out: Path) -> Path:
    """`tmp` becomes `out` by renames; the directory it replaces is removed after."""
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{out.name}.old-"))
        out.rename(old / "previous")
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out
