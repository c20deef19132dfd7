#!/usr/bin/env bash
# Installs Debian's headless browser for the demo-page tests (tests/web/): chromium and its
# matching chromedriver, from the distribution's packages (a browser download of a tool's own is
# not used). Idempotent: nothing to do when both are installed. Needs root (CI runs as root);
# elsewhere it says what to run and exits 0, and tests/web skips outside CI.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  echo "[chromium] $(chromium --version 2>/dev/null | head -n1) and chromedriver present" >&2
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[chromium] not installed; as root on Debian: apt-get install -y chromium chromium-driver" >&2
  exit 0
fi
echo "[chromium] installing Debian's chromium + chromium-driver" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver fonts-liberation >/dev/null
echo "[chromium] $(chromium --version 2>/dev/null | head -n1)" >&2
