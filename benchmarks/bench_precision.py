"""Precision tiers: milliseconds per pass for each tier and engine, the ratio to FP32 ONNX
Runtime measured in the same run, and each tier's agreement with FP32 on a real photo.

    .venv/bin/python benchmarks/bench_precision.py                 # W18-Small-v1, W48, face W18
    .venv/bin/python benchmarks/bench_precision.py --models w18s1 --repeat 3

Models (random-init, exported once into ``--work`` through the real export pipeline with its
BF16 and INT8 tiers, so the INT8 graph is the one the export calibrates): segmentation
HRNetV2-W18-Small-v1 and HRNetV2-W48 at 512x1024 (batch 1), the facial-landmark HRNetV2-W18 at
batch 8 (256x256 crops). Every tier runs in every engine that can run it:

* FP32: ONNX Runtime (the default and reference) and OpenVINO (``f32`` hint set explicitly: its
  default on AVX512-BF16 CPUs is BF16);
* BF16: OpenVINO only (ONNX Runtime has no BF16 convolution on x86);
* INT8 (the export's Q/DQ graph): ONNX Runtime and OpenVINO.

Agreement is against FP32 ONNX Runtime on the same input: label agreement (segmentation, at the
network's output resolution) and landmark displacement / NME (landmarks). Random weights have
tiny logit margins, so these figures are far worse than a trained model's: re-measure on the
real checkpoint (the export does it, on the parity photos and ``--precision-images``).

Also: OpenVINO FP32's first pass at a new input shape (it compiles kernels per shape), which
the gateway pays on every new image size. The machine's load average is printed before and
after: on a shared machine the ratios (same run) are the figures to read, not the milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import idle_cpu_note  # noqa: E402  (also puts the repository root on sys.path)

from service.runtime.backends.embedded import session_options  # noqa: E402
from service.runtime.backends.openvino import OpenVINOSession  # noqa: E402
from service.settings import Settings  # noqa: E402

MODELS = {
    "w18s1": ("segmentation", "hrnetv2_w18_small_v1", "cityscapes", (512, 1024), 1),
    "w48": ("segmentation", "hrnetv2_w48", "cityscapes", (512, 1024), 1),
    "face": ("landmarks", "hrnetv2_w18", "300w", (256, 256), 8),
}
RUNS = (("fp32", "onnxruntime"), ("fp32", "openvino"), ("bf16", "openvino"),
        ("int8", "onnxruntime"), ("int8", "openvino"))


def export(key: str, work: Path) -> Path:
    """The model's repository (exported once, with its BF16 and INT8 tiers)."""
    import torch

    from model_export.exporters import LandmarkExport, SegmentationExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.precision.tiers import PrecisionOptions
    from model_export.repository import TritonOptions

    task, arch, dataset, _, _ = MODELS[key]
    repo = work / key
    if (repo / f"{key}_int8" / "1" / "model.onnx").is_file():
        return repo
    torch.set_num_threads(os.cpu_count() or 1)
    options = (SegmentationExport(base_size=1024, crop_size=(512, 1024), parity_batches=(1,))
               if task == "segmentation" else LandmarkExport(parity_batches=(1,)))
    print(f"[bench] exporting {key} ({arch}, random init) with bf16 and int8 tiers ...",
          file=sys.stderr, flush=True)
    export_model(ExportRequest(task=task, arch=arch, dataset=dataset, name=key, repo=repo,
                               random_init=True, options=options,
                               triton=TritonOptions(instance_kind="cpu", warmup="none"),
                               precision=PrecisionOptions(tiers=("bf16", "int8"),
                                                          calibration_count=8)),
                 log=lambda _m: None)
    return repo


def photo_batch(task: str, size: tuple[int, int], batch: int) -> np.ndarray:
    """Real photos as the network's FP32 pixel input."""
    from model_export.onnx.photos import pixel_batch
    from model_export.precision.images import parity_photos

    return pixel_batch(parity_photos(), size, batch, offset=1)[0]


def runner(precision: str, engine: str, path: Path, threads: int):
    if engine == "openvino":
        session = OpenVINOSession(path, precision, threads=threads)
        return lambda x: next(iter(session.run({"image": x}).values()))
    import onnxruntime as ort

    opts = session_options(Settings(ort_intra_threads=threads, ort_inter_threads=1))
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: sess.run(None, {"image": x})[0]


def interleaved_ms(fns: list, x: np.ndarray, repeat: int) -> list[float]:
    """Median ms of each function, timed round by round (every function once per round), so
    load changes on a shared machine hit them alike; two warm-up calls each first (OpenVINO
    compiles for the shape on its first pass)."""
    for fn in fns:
        fn(x)
        fn(x)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn(x)
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) * 1e3 for t in times]


def agreement(task: str, ref: np.ndarray, got: np.ndarray) -> str:
    if task == "segmentation":
        return f"labels agree {float((ref.argmax(1) == got.argmax(1)).mean()):.4f}"
    from model_export.precision.deltas import landmark_deltas

    d = landmark_deltas([{"heatmaps": ref}], [{"heatmaps": got}], inter_ocular=(36, 45))
    return (f"landmarks move {d['mean_displacement_px']:.2f} px mean / "
            f"{d['max_displacement_px']:.1f} max, NME {d['nme']:.4f}")


def first_pass_ms(path: Path, threads: int) -> list[tuple[str, float, float]]:
    """OpenVINO FP32 on new shapes: (shape, first pass ms, steady ms)."""
    session = OpenVINOSession(path, "fp32", threads=threads)
    out = []
    for h, w in ((384, 640), (400, 600), (416, 624)):
        x = np.random.default_rng(0).uniform(0, 255, (1, 3, h, w)).astype(np.float32)
        t0 = time.perf_counter()
        session.run({"image": x})
        first = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        session.run({"image": x})
        out.append((f"{h}x{w}", first, (time.perf_counter() - t0) * 1e3))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--work", type=Path, default=Path(".cache/bench_precision"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    print(f"before: {idle_cpu_note()}; {a.threads} threads per engine; median of {a.repeat}")
    for key in a.models:
        task, arch, _, size, batch = MODELS[key]
        repo = export(key, a.work)
        x = photo_batch(task, size, batch)
        print(f"\n{key} ({arch}) input {batch}x3x{size[0]}x{size[1]}")
        print(f"  {'tier':<6}{'engine':<13}{'ms/call':>9}{'ms/pass':>9}{'vs FP32 ORT':>12}  agreement with FP32 ORT")
        fns = []
        for precision, engine in RUNS:
            name = key if precision == "fp32" else f"{key}_{precision}"
            fns.append(runner(precision, engine, repo / name / "1" / "model.onnx", a.threads))
        times = interleaved_ms(fns, x, a.repeat)
        ref, base_ms = fns[0](x), times[0]
        for (precision, engine), fn, ms in zip(RUNS, fns, times):
            print(f"  {precision:<6}{engine:<13}{ms:>9.1f}{ms / batch:>9.1f}{ms / base_ms:>11.2f}x  "
                  f"{agreement(task, ref, fn(x))}", flush=True)
        del fns
        if task == "segmentation":
            shapes = first_pass_ms(repo / key / "1" / "model.onnx", a.threads)
            print("  OpenVINO FP32, a new input shape: " + "; ".join(
                f"{s} first {f:.0f} ms, then {t:.0f} ms" for s, f, t in shapes))
    print(f"\nafter: {idle_cpu_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
