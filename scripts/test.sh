#!/usr/bin/env bash
# The README's test command: installs everything (venv, project, a real tritonserver, nginx) and runs
# the tests.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/export -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh export,test,cpu,openvino
bash scripts/install_triton.sh
bash scripts/install_nginx.sh
bash scripts/install_chromium.sh
venv=${HRNET_VENV:-.venv}
exec "$venv/bin/python" -m pytest "$@"
