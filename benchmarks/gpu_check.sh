#!/usr/bin/env bash
# The one prepared GPU check (issue 10): run it once on one NVIDIA GPU machine, from a bare
# checkout, in under 8 minutes; nothing in CI runs it.
#
#     bash benchmarks/gpu_check.sh            # GPU machine
#     WHEELHOUSE=/path/to/wheels bash benchmarks/gpu_check.sh   # no package index reachable
#     bash benchmarks/gpu_check.sh --cpu      # the same steps on CPU providers (no TensorRT)
#
# Steps (each bounded by `timeout` within GPU_CHECK_BUDGET_S, default 470 s; an already
# installed venv in $GPU_CHECK_DIR is reused, which is what makes a second try fit):
#   1. install: a venv (system site packages visible, so a preinstalled torch / tensorrt is
#      used) with '.[gpu,export,test]' (onnxruntime-gpu instead of onnxruntime) and, if it is
#      not importable yet, tensorrt. The machine must reach a package index, or WHEELHOUSE must
#      name a folder holding every wheel (pip --no-index --find-links); the CUDA libraries of the
#      nvidia-* wheels are put on LD_LIBRARY_PATH for ONNX Runtime's CUDA provider.
#   2. export: the demo entries (python -m model_export demo, GPU instances) and a random-init
#      HRNetV2-W48 with the official Cityscapes protocol (benchmarks/gpu_check.py).
#   3. benchmarks/gpu_check.py: TensorRT FP32/FP16 plans with their engine-vs-ONNX checks, ORT
#      CUDA vs CPU parity, the embedded gateway on CUDA with the merge on the device, and the
#      table below (also written as JSON to $WORK/gpu_check.json).
#
# The table, line by line:
#   device                             GPU name and driver (nvidia-smi).
#   TensorRT FP16 / ORT-CUDA FP32, W48 1024x2048
#                                      time of one 1x3x1024x2048 pass of the W48 network through
#                                      the FP16 TensorRT plan (host buffers copied in and out)
#                                      over the same pass through ONNX Runtime's CUDA provider in
#                                      FP32, medians of 3 after a warm-up; below 1: the plan is
#                                      faster.
#   TensorRT FP32 plan vs ONNX: max rel err, worst labels, passed
#   TensorRT FP16 plan vs ONNX: max rel err, worst labels, passed
#                                      each plan's own parity (model_export/precision/
#                                      plan_check.py): the largest logit difference from the ONNX
#                                      graph (ONNX Runtime CPU) over the largest logit, the worst
#                                      photo's label agreement at 1/4 resolution, and whether it
#                                      met its limits (FP16 label limit lowered to 0.9 for
#                                      random-init weights: --plan-min-label-agreement).
#   ORT CUDA vs CPU: max rel err, labels
#                                      the W48 graph on CUDA against CPU on a 512x1024 photo
#                                      (--cpu: "ORT CPU vs CPU", trivially equal).
#   /segment HTTP / bare, single scale the gateway (python -m service, embedded backend on CUDA,
#                                      merge on the device) answering /segment for a 2048x1024
#                                      photo over HTTP (PNG label map), over "bare" ONNX Runtime
#                                      CUDA running the same passes batched as the gateway's
#                                      runner batches them, no merge; medians of 3.
#   /segment HTTP / bare, 6 scales + flip (30 passes)
#                                      the same for the official 6 scales + flip (the bare side
#                                      runs the 30 passes only: the ratio includes the merge).
#   official 6-scale + flip test, 2048x1024, end to end
#                                      that request's median wall time at the client.
#   merge on the device vs gateway merge: label agreement
#                                      the 6-scale + flip label map with the merge graph on the
#                                      GPU against a second gateway merging in numpy.
#   peak GPU memory                    the largest memory.used of GPU 0 sampled every 0.2 s
#                                      through steps 3 (exports, plans, both gateways).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
MODE=gpu
[[ "${1:-}" == "--cpu" ]] && MODE=cpu
WORK=${GPU_CHECK_DIR:-/tmp/hrnet_gpu_check}
VENV=$WORK/venv
REPO=$WORK/repo
mkdir -p "$WORK"
t0=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET_S:-470}  # the whole run, seconds (the machine is lent for ~15 min)
say() { echo "[gpu_check.sh +$(( $(date +%s) - t0 ))s] $*" >&2; }
# Seconds left of the budget, at most $1 (a step's own cap), at least 30.
left() {
  local l=$(( BUDGET - ($(date +%s) - t0) ))
  (( l > $1 )) && l=$1
  (( l < 30 )) && l=30
  echo "$l"
}

if [[ $MODE == gpu ]] && ! command -v nvidia-smi >/dev/null; then
  say "no nvidia-smi: not a GPU machine (use --cpu to try the steps on CPU)"; exit 2
fi

# 1. install
PY=${PYTHON:-python3}
if [[ ! -x $VENV/bin/python ]]; then
  "$PY" -m venv --system-site-packages "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q)
[[ -n "${WHEELHOUSE:-}" ]] && PIP+=(--no-index --find-links "$WHEELHOUSE")
EXTRA=gpu
[[ $MODE == cpu ]] && EXTRA=cpu
say "installing '.[$EXTRA,export,test]'"
timeout "$(left 240)" "${PIP[@]}" -e "$ROOT[$EXTRA,export,test]"
if [[ $MODE == gpu ]] && ! "$VENV/bin/python" -c "import tensorrt" 2>/dev/null; then
  say "installing tensorrt"
  timeout "$(left 120)" "${PIP[@]}" tensorrt || say "tensorrt not installed: its lines will say n/a"
fi
# ONNX Runtime's CUDA provider loads libcudnn/libcublas from the nvidia-* wheels torch brought.
NV_LIBS=$("$VENV/bin/python" - <<'EOF'
import glob, os, site
dirs = []
for sp in site.getsitepackages():
    dirs += sorted(glob.glob(os.path.join(sp, "nvidia", "*", "lib")))
    dirs += sorted(glob.glob(os.path.join(sp, "tensorrt_libs")))
print(":".join(dirs))
EOF
)
export LD_LIBRARY_PATH="${NV_LIBS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# 2. the demo entries (the W48 export is gpu_check.py's first step)
rm -rf "$REPO"
say "exporting the demo entries"
KIND=gpu
[[ $MODE == cpu ]] && KIND=cpu
timeout "$(left 150)" "$VENV/bin/python" -m model_export demo --repo "$REPO" --instance-kind "$KIND"

# 3. the checks and the table
ARGS=(--repo "$REPO" --json "$WORK/gpu_check.json")
[[ $MODE == cpu ]] && ARGS+=(--cpu)
say "running benchmarks/gpu_check.py"
timeout "$(left 420)" "$VENV/bin/python" benchmarks/gpu_check.py "${ARGS[@]}"
say "done"
