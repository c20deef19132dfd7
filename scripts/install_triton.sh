#!/usr/bin/env bash
# Installs a real, CPU-only Triton Inference Server for the integration tests (tests/triton/).
#
# NVIDIA's containers are not reachable from here, but the PyPI wheel nvidia-pytriton==0.7.0 ships
# a complete `tritonserver` 2.51 binary, its shared libraries and the python backend. We unpack
# those (no pip install of pytriton itself) and add what the python backend's stub needs:
#   - the Python 3.11 stub copied to backends/python/triton_python_backend_stub;
#   - a --target directory with numpy<2, onnxruntime (and openvino, when the venv has it, for the
#     OpenVINO precision tiers), because the stub embeds the *system*
#     libpython3.11 and never sees our virtual environment (model.py puts it on sys.path).
#
# Layout (TRITON_HOME, default .cache/triton, git-ignored):
#   wheel/                         the downloaded wheel (cache)
#   dist/pytriton/tritonserver/    bin/tritonserver, backends/python/, caches/
#   dist/nvidia_pytriton.libs/     the binary's bundled libraries (found through its RPATH)
#   pydeps/                        numpy + onnxruntime for the stub
#   env.sh                         TRITON_* variables and LD_LIBRARY_PATH to source
#   .stamp                         present when everything above is complete
# Idempotent: a second run with the same versions only re-verifies (about a second).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTRITON_VERSION=${PYTRITON_VERSION:-0.7.0}
home=${TRITON_HOME:-.cache/triton}
venv=${HRNET_VENV:-.venv}
py="$venv/bin/python"
[ -x "$py" ] || py=python3
mkdir -p "$home"
home=$(cd "$home" && pwd)

# The stub's ORT should match the gateway's so both backends give identical numbers.
ort_version=$("$py" -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || true)
ort_spec="onnxruntime${ort_version:+==$ort_version}"
# OpenVINO entries (precision tiers) run through OpenVINO in the stub too, same version as the
# gateway's; none when the gateway has none (pip install '.[openvino]').
ov_version=$("$py" -c 'from importlib.metadata import version; print(version("openvino"))' 2>/dev/null || true)
ov_spec="${ov_version:+openvino==$ov_version}"
stamp_text="pytriton=$PYTRITON_VERSION $ort_spec numpy<2${ov_spec:+ $ov_spec}"

server="$home/dist/pytriton/tritonserver"
if [ -f "$home/.stamp" ] && [ "$(cat "$home/.stamp")" = "$stamp_text" ] && [ -x "$server/bin/tritonserver" ]; then
  echo "[triton] cached in $home ($stamp_text)" >&2
else
  rm -f "$home/.stamp"
  mkdir -p "$home/wheel"
  wheel=$(ls "$home"/wheel/nvidia_pytriton-"$PYTRITON_VERSION"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    echo "[triton] downloading nvidia-pytriton==$PYTRITON_VERSION (~55 MB)" >&2
    "$py" -m pip download -q --no-deps "nvidia-pytriton==$PYTRITON_VERSION" -d "$home/wheel"
    wheel=$(ls "$home"/wheel/nvidia_pytriton-"$PYTRITON_VERSION"-*.whl | head -n1)
  fi
  echo "[triton] unpacking $(basename "$wheel")" >&2
  rm -rf "$home/dist"
  # The wheel is a zip; Python's zipfile avoids depending on an unzip binary.
  "$py" - "$wheel" "$home/dist" <<'EOF'
import os, stat, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    for info in zf.infolist():
        if not info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
            continue
        path = zf.extract(info, dest)
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode | stat.S_IRUSR)
EOF
  # Same directory depth as python_backend_stubs/3.11/, so the stub's $ORIGIN RPATH still resolves.
  cp "$server/python_backend_stubs/3.11/triton_python_backend_stub" "$server/backends/python/"
  chmod +x "$server/bin/tritonserver" "$server/backends/python/triton_python_backend_stub"

  echo "[triton] installing $ort_spec${ov_spec:+, $ov_spec} and numpy<2 for the python backend stub into pydeps/" >&2
  rm -rf "$home/pydeps"
  # (pip may warn that numpy<2 conflicts with packages of the venv: pydeps is a separate tree.)
  "$py" -m pip install -q --disable-pip-version-check --no-warn-script-location \
    --target "$home/pydeps" "numpy<2" "$ort_spec" ${ov_spec:+"$ov_spec"} 2>&1 | grep -v -E "dependency resolver|requires numpy" >&2 || true
  [ -d "$home/pydeps/onnxruntime" ] || { echo "[triton] pip install --target pydeps failed" >&2; exit 1; }
  [ -z "$ov_spec" ] || [ -d "$home/pydeps/openvino" ] || { echo "[triton] pip install of $ov_spec into pydeps failed" >&2; exit 1; }
fi

# The stub links libpython3.11.so.1.0. Debian's libpython3.11 provides it system-wide; where it is
# missing, fall back to the directory of the interpreter we run (pyenv builds ship a shared one).
libpy_dir=""
if ! ldconfig -p 2>/dev/null | grep -q 'libpython3\.11\.so\.1\.0'; then
  libpy_dir=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
  if [ ! -e "$libpy_dir/libpython3.11.so.1.0" ]; then
    echo "[triton] libpython3.11.so.1.0 not found: apt-get install libpython3.11 (or a shared CPython 3.11)" >&2
    exit 1
  fi
  echo "[triton] using libpython3.11 from $libpy_dir (LD_LIBRARY_PATH)" >&2
fi

cat >"$home/env.sh" <<EOF
# Generated by scripts/install_triton.sh
export TRITON_HOME="$home"
export TRITON_SERVER="$server/bin/tritonserver"
export TRITON_BACKENDS="$server/backends"
export TRITON_PYDEPS="$home/pydeps"
export TRITON_LIBPYTHON_DIR="$libpy_dir"
${libpy_dir:+export LD_LIBRARY_PATH="$libpy_dir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"}
EOF

# Verify: the server binary loads its libraries, the stub resolves libpython, pydeps import.
export LD_LIBRARY_PATH="${libpy_dir}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$server/bin/tritonserver" "$server/backends/python/triton_python_backend_stub" | grep -q 'not found'; then
  ldd "$server/bin/tritonserver" "$server/backends/python/triton_python_backend_stub" | grep 'not found' >&2
  echo "[triton] missing shared libraries (above)" >&2
  exit 1
fi
# (`--help` exits 1 by design, so look for a known option in its text instead.)
help_text=$("$server/bin/tritonserver" --help 2>&1 || true)
case "$help_text" in
  *--model-repository*) ;;
  *) echo "$help_text" | tail -n 5 >&2; echo "[triton] tritonserver does not start" >&2; exit 1 ;;
esac
# The stub embeds the system libpython3.11: check the pydeps import under that interpreter.
checker=/usr/bin/python3.11
[ -x "$checker" ] || checker="$py"
PYTHONPATH="$home/pydeps" "$checker" -s -S -c 'import numpy, onnxruntime; assert numpy.__version__ < "2"' \
  || { echo "[triton] pydeps do not import" >&2; exit 1; }
if [ -n "$ov_spec" ]; then
  PYTHONPATH="$home/pydeps" "$checker" -s -S -c 'import openvino; openvino.Core()' \
    || { echo "[triton] openvino in pydeps does not import" >&2; exit 1; }
fi
echo "$stamp_text" >"$home/.stamp"
echo "[triton] ready: $server/bin/tritonserver (source $home/env.sh)" >&2
