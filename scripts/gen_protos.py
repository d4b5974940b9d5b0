"""Regenerate the protobuf/gRPC stubs in service/samserve/v1 from service/protos (needs grpcio-tools).

python scripts/gen_protos.py            # rewrite the stubs
python scripts/gen_protos.py --check    # exit 1 when the committed stubs are stale
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "service" / "protos"
TARGET = ROOT / "service" / "samserve" / "v1"
FILES = ["samserve_pb2.py", "samserve_pb2.pyi", "samserve_pb2_grpc.py"]


def generate(out: Path) -> None:
    proto = PROTO_ROOT / "samserve" / "v1" / "samserve.proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(proto),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


def main() -> int:
    check = "--check" in sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        produced = Path(tmp) / "samserve" / "v1"
        if check:
            stale = [f for f in FILES if not (TARGET / f).exists() or not filecmp.cmp(produced / f, TARGET / f)]
            if stale:
                print(f"stale generated stubs: {stale}; run python scripts/gen_protos.py")
                return 1
            return 0
        TARGET.mkdir(exist_ok=True)
        (TARGET / "__init__.py").write_text('"""Generated protobuf/gRPC stubs (scripts/gen_protos.py)."""\n')
        for f in FILES:
            shutil.copy(produced / f, TARGET / f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
