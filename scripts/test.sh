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
# The exports and repositories of a run peak at 4.2 GB under pytest's base temp (README).
tmp=${TMPDIR:-/tmp}
free_kb=$(df -Pk "$tmp" 2>/dev/null | awk 'NR == 2 {print $4}')
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((5 * 1024 * 1024)) ]; then
    echo "warning: $((free_kb / 1024)) MiB free in $tmp; the tests need about 5 GB there" >&2
fi
exec "$venv/bin/python" -m pytest "$@"
