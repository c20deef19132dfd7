# syntax=docker/dockerfile:1
# The HTTP gateway with ONNX Runtime on CUDA in-process (embedded backend on a GPU): the same
# service/ as docker/gateway.Dockerfile, with onnxruntime-gpu (the `gpu` extra) on NVIDIA's CUDA
# 12 + cuDNN 9 runtime. Needs the NVIDIA container toolkit on the host:
#   docker build -f docker/gateway-gpu.Dockerfile -t hrnet-gateway-gpu .
#   docker run --gpus all -p 8000:8000 -v "$PWD/triton_repo:/models:ro" hrnet-gateway-gpu
# Providers: CUDA first (HRNET_ORT_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]'
# makes it a requirement: start-up fails loudly without a usable GPU).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# Ubuntu 24.04's Python 3.12 (within the project's >=3.11,<3.13) in a venv of its own; the
# distribution's python3 follows the base image's release, so it is not pinned further.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --system --gid 10001 hrnet \
    && useradd --system --uid 10001 --gid hrnet --home-dir /app --shell /usr/sbin/nologin hrnet \
    && mkdir -p /models /tmp/hrnet-tensorrt-cache \
    && chown hrnet:hrnet /models /tmp/hrnet-tensorrt-cache

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
# The project itself (versions pinned in pyproject.toml), not a registry package:
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[gpu]" \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

USER 10001:10001

ENV HRNET_BACKEND=embedded \
    HRNET_REPOSITORY=/models \
    HRNET_HOST=0.0.0.0 \
    HRNET_PORT=8000 \
    HRNET_ORT_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]' \
    HRNET_ORT_TENSORRT_CACHE_DIR=/tmp/hrnet-tensorrt-cache

EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]

# python -m service runs uvicorn as configured by service/http/server.py (h11, header and body
# timeouts, header limits, a bound on open connections); a bare `uvicorn` command would not.
CMD ["python", "-m", "service"]
