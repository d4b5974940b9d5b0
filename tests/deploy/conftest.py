"""Rendered Kubernetes overlays (kubectl kustomize, offline)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ["gpu", "cpu"]


@pytest.fixture(scope="session", params=OVERLAYS)
def rendered(request) -> tuple[str, list[dict]]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed here; it renders the kustomize overlays offline")
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / request.param)], capture_output=True, text=True, check=True
    )
    return request.param, [d for d in yaml.safe_load_all(out.stdout) if d]
