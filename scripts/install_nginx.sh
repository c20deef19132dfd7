#!/usr/bin/env bash
# Installs nginx from Debian's packages for tests/deploy/test_replicas.py and
# benchmarks/bench_replicas.py (two gateway replicas behind deploy/nginx/hrnet.conf).
# Idempotent: does nothing when an nginx binary is already there. Needs root (apt-get), as CI has.
# The package's post-install script would start a system nginx on port 80: a temporary
# policy-rc.d forbids that (the tests run their own nginx on free ports, as an ordinary process).
set -euo pipefail

find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }

if [ -n "$(find_nginx)" ]; then
  echo "[nginx] present: $(find_nginx) ($("$(find_nginx)" -v 2>&1))" >&2
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[nginx] not installed and not root: run 'apt-get install nginx' as root" >&2
  exit 1
fi

policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  added_policy=1
fi
cleanup() { if [ -n "$added_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "[nginx] installing nginx (Debian package)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends nginx >/dev/null
nginx_bin=$(find_nginx)
[ -n "$nginx_bin" ] || { echo "[nginx] installation failed" >&2; exit 1; }
echo "[nginx] ready: $nginx_bin ($("$nginx_bin" -v 2>&1))" >&2
