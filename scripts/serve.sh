#!/usr/bin/env bash
# The README's serve command. When the repository already holds models it installs the gateway's
# own dependencies only (no torch: ~0.5 GB) and serves them; when it holds none it installs the
# exporter too (torch with its CUDA libraries, ~6 GB), writes the demo repository (random-init
# HRNet models, clearly labelled so, and the real BlazeFace face detector) and serves that.
# Settings come from HRNET_* environment variables (see README, "Settings").
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${HRNET_VENV:-.venv}
repo=${HRNET_REPOSITORY:-triton_repo}
if ls "$repo"/*/hrnet.json >/dev/null 2>&1; then
  echo "[serve] $repo holds models: installing the gateway only (no torch)" >&2
  bash scripts/setup_env.sh cpu,openvino
else
  echo "[serve] $repo has no models: installing the exporter (torch) to write the demo repository (random-init HRNets, real face detector)" >&2
  bash scripts/setup_env.sh export,cpu,openvino
  "$venv/bin/python" -m model_export demo --repo "$repo"
fi
export HRNET_REPOSITORY="$repo"
exec "$venv/bin/python" -m service --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}"
