"""The layers of README "How it is built", checked on every import in the tree: dependencies
point one way (gateway -> core, triton -> core, everything -> contract), the Triton side never
reaches the gateway or its dependencies, the core needs only numpy/Pillow/scipy, transport
builds no backend, and no tool imports the tests."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "service" / "samserve"

# What the gateway brings in that the Triton image must not need.
GATEWAY_ONLY = (
    "grpc",
    "grpc_health",
    "grpc_reflection",
    "redis",
    "pydantic",
    "pydantic_settings",
    "tritonclient",
    "prometheus_client",
    "samserve.gateway",
    "samserve.client",
    "samserve.devtools",
    "samserve.v1",
)


def module_of(path: Path) -> str:
    """The dotted name a file imports as (service/samserve/x/y.py -> samserve.x.y)."""
    parts = path.resolve().with_suffix("").parts
    if "service" in parts:  # the package lives under service/
        parts = parts[len(parts) - parts[::-1].index("service") :]
    else:
        parts = path.resolve().with_suffix("").relative_to(ROOT).parts
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included); relative
    imports resolved against the file's own package."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            base = module_of(path).split(".")[: -node.level]
            out.add(".".join([*base, node.module] if node.module else base))
    return out


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(files: list[Path], forbidden=(), allowed=None, root: Path = ROOT) -> list[str]:
    """`file: module` for each import under a forbidden prefix, or (with `allowed`) outside the
    standard library and the allowed prefixes."""
    bad = []
    for f in files:
        for m in sorted(imports(f)):
            top = m.split(".")[0]
            if under(m, tuple(forbidden)) or (
                allowed is not None and top not in sys.stdlib_module_names and not under(m, tuple(allowed))
            ):
                bad.append(f"{f.relative_to(root)}: {m}")
    return bad


def py(*folders: Path) -> list[Path]:
    files = [p for d in folders for p in sorted(d.rglob("*.py"))]
    assert files, folders
    return files


TRITON_SIDE = [*py(PKG / "triton"), *sorted((ROOT / "model_repository").glob("*/1/model.py"))]
LAYERS = {
    "triton_side_never_imports_the_gateway": (TRITON_SIDE, GATEWAY_ONLY, None),
    # Triton's environment ([triton] extra) has OpenCV (core.postprocess upsamples masks with it)
    "core_imports_only_numpy_pillow_scipy_opencv": (
        [f for f in py(PKG / "core") if f.name not in ("polygons.py", "mask_formats.py")],
        (),
        ("__future__", "numpy", "PIL", "scipy", "cv2", "samserve.core", "samserve.contract"),
    ),
    # C-encoded COCO RLE is made in the gateway only (Triton's environment has no pycocotools):
    # imported inside its function, so importing samserve.core never needs it
    # (test_core_imports_without_pycocotools)
    "core_encoders_import_only_opencv_and_pycocotools_more": (
        [PKG / "core" / "polygons.py", PKG / "core" / "mask_formats.py"],
        (),
        ("__future__", "numpy", "PIL", "cv2", "pycocotools", "samserve.core"),
    ),
    "contract_imports_only_numpy": ([PKG / "contract.py"], (), ("__future__", "numpy")),
    "transport_builds_no_backend": (
        py(PKG / "gateway" / "transport"),
        ("samserve.gateway.backends", "samserve.gateway.app", "tritonclient", "redis"),
        None,
    ),
    "no_tool_imports_the_tests": (
        py(ROOT / "training", ROOT / "benchmarks", ROOT / "examples", ROOT / "build_engines", PKG, ROOT / "scripts"),
        ("tests",),
        None,
    ),
    "build_engines_uses_only_the_contract": (
        [f for f in py(ROOT / "build_engines") if f.name != "engine_accuracy.py"],
        ("samserve.core", "samserve.triton", *GATEWAY_ONLY),  # it runs in the Triton image too
        None,
    ),
    # the accuracy gate runs what is served (the CPU models' runtime, the families' preprocessing)
    "the_accuracy_gate_runs_the_served_code": (
        [ROOT / "build_engines" / "engine_accuracy.py"],
        ("samserve.core.image", *GATEWAY_ONLY),
        None,
    ),
    "the_sdk_needs_no_server_side": (
        [PKG / "client" / "sdk.py", PKG / "client" / "overlay.py"],
        ("samserve.gateway", "samserve.triton", "samserve.devtools", "tritonclient", "redis", "build_engines"),
        None,
    ),
    "the_server_side_needs_no_devtools": (
        py(PKG / "gateway", PKG / "core", PKG / "triton"),
        ("samserve.devtools", "samserve.client", "build_engines", "tests"),
        None,
    ),
}


def test_core_imports_without_pycocotools():
    """Triton's environment has none: every core module imports with it unimportable."""
    code = (
        "import sys, pkgutil, importlib; sys.modules['pycocotools'] = None; "
        "import samserve.core as c; "
        "[importlib.import_module('samserve.core.' + m.name) for m in pkgutil.iter_modules(c.__path__)]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("rule", list(LAYERS))
def test_layer(rule):
    files, forbidden, allowed = LAYERS[rule]
    assert violations(files, forbidden, allowed) == []


def test_the_checker_sees_nested_from_and_relative_imports(tmp_path):
    pkg = tmp_path / "service" / "samserve" / "core"
    pkg.mkdir(parents=True)
    probe = pkg / "probe.py"
    probe.write_text(
        "import numpy, json\n\ndef f():\n    from samserve.gateway.engine import E\n    import redis.asyncio\n"
        "    from ..gateway import app\n"
    )
    assert imports(probe) >= {"numpy", "json", "samserve.gateway.engine", "redis.asyncio"}
    assert violations([probe], GATEWAY_ONLY, root=tmp_path) == [
        "service/samserve/core/probe.py: redis.asyncio",
        "service/samserve/core/probe.py: samserve.gateway",  # from ..gateway
        "service/samserve/core/probe.py: samserve.gateway.engine",
    ]
    assert len(violations([probe], (), ("numpy",), root=tmp_path)) == 3  # json is the standard library
    assert not under("samserve.gateways", ("samserve.gateway",))


def test_relative_imports_resolve_against_the_package():
    f = PKG / "core" / "image.py"
    assert module_of(f) == "samserve.core.image"


def test_triton_side_loads_without_the_gateways_dependencies():
    """Every Triton-side module and every model.py (with a stand-in for Triton's own
    triton_python_backend_utils) imports with the gateway's dependencies made unimportable."""
    models = [str(p) for p in sorted((ROOT / "model_repository").glob("*/1/model.py"))]
    code = f"""
import importlib, importlib.abc, importlib.util, pkgutil, sys, types
BLOCKED = {{"grpc", "redis", "pydantic", "pydantic_settings", "tritonclient", "prometheus_client", "torch"}}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or name.startswith(("samserve.gateway", "samserve.devtools")):
            raise ImportError(f"the Triton side imported {{name}}")
sys.meta_path.insert(0, Block())
sys.modules["triton_python_backend_utils"] = types.ModuleType("triton_python_backend_utils")
import samserve.triton, samserve.core, samserve.contract
for pkg in (samserve.triton, samserve.core):
    for m in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(pkg.__name__ + "." + m.name)
for i, path in enumerate({models!r}):
    spec = importlib.util.spec_from_file_location(f"model{{i}}", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
