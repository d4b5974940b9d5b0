# syntax=docker/dockerfile:1
# Two images, one file:
#   docker build --target gateway -t samserve-gateway .   # the gRPC gateway: no PyTorch, non-root
#   docker build --target triton  -t samserve-triton  .   # Triton + what the python-backend models import
# Engines are GPU- and TensorRT-version-specific, so none is baked in: the Triton pod builds its
# model repository on its node at start (deploy/k8s), keyed by GPU model and TensorRT version.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.08-py3

FROM ${PYTHON_IMAGE} AS gateway
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SAMSERVE_HOST=0.0.0.0 \
    SAMSERVE_EMBEDDED=false
RUN groupadd --system --gid 10001 samserve \
    && useradd --system --uid 10001 --gid samserve --no-create-home --shell /usr/sbin/nologin samserve
WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY service ./service
COPY build_engines ./build_engines
# runtime dependencies only (numpy, Pillow, grpcio, tritonclient, redis, pydantic, prometheus-client,
# starlette + uvicorn for the HTTP API and the page, OpenCV headless for polygons)
RUN pip install --no-cache-dir -c constraints.txt . \
    && python -c "import sys, samserve.gateway.app; assert 'torch' not in sys.modules"
USER 10001:10001
EXPOSE 50051 8080 9090
ENTRYPOINT ["samserve", "serve", "--no-embedded"]

FROM ${TRITON_IMAGE} AS triton
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/samserve
COPY pyproject.toml README.md constraints.txt requirements-triton.txt ./
COPY service ./service
COPY build_engines ./build_engines
COPY model_repository ./model_repository
# The package without the gateway's dependencies (no grpcio, redis, pydantic, tritonclient), then
# requirements-triton.txt: [triton] what model.py imports (numpy, Pillow, scipy, OpenCV, OpenVINO, onnxruntime);
# [build] export + verify at start (torch, segment-anything, onnx); [gpu] the TensorRT Python
# API matching the image's TensorRT, to build plans on the node
RUN pip install --no-cache-dir --no-deps . \
    && pip install --no-cache-dir -c constraints.txt -r requirements-triton.txt
# SAM 2's reference (an sdist; export of sam2.1_hiera_* checkpoints): as scripts/setup.sh installs
# it, without its CUDA extension, its dependency on torchvision or its top-level `training` package
RUN pip install --no-cache-dir "setuptools>=70.1" \
    && SAM2_BUILD_CUDA=0 pip install --no-cache-dir -c constraints.txt --no-deps --no-build-isolation sam2==1.1.0 \
    && rm -rf "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/training"
# triton-server, the official image's non-root user
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
