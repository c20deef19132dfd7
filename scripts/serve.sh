#!/usr/bin/env bash
# The README's serve command: installs everything, exports the demo repository when the
# repository is empty (random-init HRNet models, clearly labelled so, and the real BlazeFace face
# detector), and starts the gateway.
# Settings come from HRNET_* environment variables (see README, "Settings").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh export
venv=${HRNET_VENV:-.venv}
repo=${HRNET_REPOSITORY:-triton_repo}
if ! ls "$repo"/*/hrnet.json >/dev/null 2>&1; then
  echo "[serve] $repo has no models: exporting the demo repository (random-init HRNets, real face detector)" >&2
  "$venv/bin/python" -m model_export demo --repo "$repo"
fi
export HRNET_REPOSITORY="$repo"
exec "$venv/bin/python" -m service --host "${HOST:-0.0.0.0}" --port "${PORT:-8000}"
