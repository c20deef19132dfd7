# syntax=docker/dockerfile:1
# The HTTP gateway (service/): FastAPI + numpy + ONNX Runtime + tritonclient. No torch.
#   docker build -f docker/gateway.Dockerfile -t hrnet-gateway .
# Serves the models of a Triton server by default (HRNET_BACKEND=triton); with
# HRNET_BACKEND=embedded and a repository mounted at /models it runs ONNX Runtime in-process.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 hrnet \
    && useradd --system --uid 10001 --gid hrnet --home-dir /app --shell /usr/sbin/nologin hrnet \
    && mkdir -p /models \
    && chown hrnet:hrnet /models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
# The gateway's dependencies and ONNX Runtime's CPU wheel (the embedded backend): the export
# extras (torch, onnx) never enter this image. docker/gateway-gpu.Dockerfile: the CUDA variant.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[cpu]" \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"

# Numeric, so runtimes can verify a non-root user (e.g. Kubernetes runAsNonRoot).
USER 10001:10001

ENV HRNET_BACKEND=triton \
    HRNET_TRITON_URL=triton:8001 \
    HRNET_TRITON_PROTOCOL=grpc \
    HRNET_REPOSITORY=/models \
    HRNET_HOST=0.0.0.0 \
    HRNET_PORT=8000 \
    HRNET_ACCESS_LOG=false

EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"]

# One process per container; scale with replicas. Settings come from HRNET_* variables.
# python -m service runs uvicorn as configured by service/http/server.py (h11, header and body
# timeouts, header limits, a bound on open connections); a bare `uvicorn` command would not.
CMD ["python", "-m", "service"]
