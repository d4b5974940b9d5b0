#!/usr/bin/env bash
# Sets up everything samserve needs on a Debian/Ubuntu machine, idempotently:
# redis-server and libpython (for Triton's python-backend stub) from apt (with --browser also
# chromium, for the page's tests), a virtualenv in .venv with the package, its build/test
# extras and the tritonserver binary from nvidia-pytriton.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)  # the dashboard-query tests
# --browser: Debian's chromium for the page's tests (Playwright drives it; no browser download)
if [ "${1:-}" = "--browser" ]; then
  command -v chromium >/dev/null 2>&1 || packages+=(chromium)
fi
ldconfig -p | grep -q "libpython${PYVER}.so.1.0" || packages+=("libpython${PYVER}")
if [ ${#packages[@]} -gt 0 ]; then
  echo "setup: installing ${packages[*]} with apt-get"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.samserve-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python packages into .venv (torch is pinned to the CPU build 2.13.0)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[build,test]"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps nvidia-pytriton==0.7.0
  # SAM 2's reference, an sdist: without its CUDA extension, without dependency resolution (it
  # asks for torchvision, which has no CPU wheel: build_engines/torchvision_compat stands in), and
  # without the top-level `training` package it also installs, which would shadow the repository's
  .venv/bin/pip install -q --disable-pip-version-check "setuptools>=70.1"  # builds wheels without `wheel`
  SAM2_BUILD_CUDA=0 .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt \
    --no-deps --no-build-isolation sam2==1.1.0
  rm -rf "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/training"
  echo "$want" > "$stamp"
fi
