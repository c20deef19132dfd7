"""The Python half of benchmarks/gpu_check.sh: every GPU-side check in one process, one table.

    .venv/bin/python benchmarks/gpu_check.py --repo DIR [--model NAME] [--cpu] [--repeat 3]

Without ``--model`` it exports a random-init HRNetV2-W48 with the official Cityscapes protocol
(base 2048, crop 1024x2048; max batch 2 so the TensorRT profile stays small) as ``w48`` into
``--repo`` (the shell script exports the demo entries beside it). Then, each step timed:

1. TensorRT plans (``tensorrt`` importable): FP32 and FP16 built from the W48 graph with their
   engine-vs-ONNX check (model_export/precision/plan_check.py), then FP16 plan vs ONNX Runtime
   CUDA FP32 on one 1024x2048 pass (median of ``--repeat``);
2. ONNX Runtime CUDA vs CPU on the same graph and photo (512x1024): output error and labels;
3. the embedded gateway (``python -m service``) on CUDA, merge on the device
   (``merge_on_device=on``), over HTTP: ``/segment`` of a 2048x1024 photo, single scale and the
   official 6 scales + flip, against "bare" ONNX Runtime on the same device running the same
   passes batched as the gateway's runner batches them; and a second gateway with the gateway's
   own numpy merge for the label agreement of the two merges;
4. peak GPU memory (``nvidia-smi`` sampled every 0.2 s through all of it).

``--cpu``: the same steps on CPU providers (no TensorRT: its lines say n/a), to test this script
where there is no GPU (tests/deploy/test_gpu_check.py; with ``--model`` of an existing entry and
a small ``--photo-size`` it takes seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import bare_session, gateway, materialise, photo, run_batched  # noqa: E402

from service.contract import ModelMetadata  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.tasks.segmentation.plan import plan_segmentation  # noqa: E402

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]
CPU = ["CPUExecutionProvider"]
OFFICIAL = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


class GpuMemory:
    """Peak ``memory.used`` of GPU 0 (MiB), sampled by ``nvidia-smi`` in a thread."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                                      "--format=csv,noheader,nounits", "-i", "0"],
                                     capture_output=True, text=True, timeout=5).stdout
                used = float(out.strip().splitlines()[0])
                self.peak = used if self.peak is None else max(self.peak, used)
            except Exception:  # no nvidia-smi (CPU run): no figure
                return
            self._stop.wait(0.2)

    def __enter__(self) -> "GpuMemory":
        self._thread.start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``fn`` over ``repeat`` runs after one warm-up, ms."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def log(message: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def export_w48(repo: Path, cpu: bool) -> str:
    """The random-init W48 Cityscapes entry (``--cpu``: W18-Small-v1, small protocol)."""
    from model_export.exporters import SegmentationExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions

    arch, opts = "hrnetv2_w48", SegmentationExport(max_batch_size=2)
    if cpu:
        arch = "hrnetv2_w18_small_v1"
        opts = SegmentationExport(base_size=256, crop_size=(128, 256), max_batch_size=2,
                                  trace_size=(64, 128), parity_sizes=[(96, 128)],
                                  parity_batches=(1,))
    req = ExportRequest(task="segmentation", arch=arch, dataset="cityscapes", name="w48",
                        repo=repo, random_init=True, options=opts,
                        triton=TritonOptions(instance_kind="cpu" if cpu else "gpu",
                                             warmup="none"))
    export_model(req, log=log)
    return "w48"


def plans(onnx_path: Path, meta: ModelMetadata, plan_min_labels: float, repeat: int,
          feed: dict[str, np.ndarray]) -> dict[str, Any]:
    """FP32/FP16 plans with their checks, and FP16 plan / ORT-CUDA FP32 on ``feed``."""
    import onnxruntime as ort

    from model_export.precision.build import build_tensorrt_tiers
    from model_export.precision.plan_check import PlanThresholds
    from model_export.precision.tiers import PrecisionOptions
    from model_export.tensorrt import tensorrt_available, tensorrt_runner

    if not tensorrt_available():
        return {"skipped": "tensorrt is not importable here"}
    staging = Path(tempfile.mkdtemp(prefix="gpu_check_trt_"))
    popts = PrecisionOptions(plan_thresholds=PlanThresholds(min_label_agreement=plan_min_labels))
    builds = build_tensorrt_tiers("segmentation", onnx_path, staging, meta, popts,
                                  ("fp32", "fp16"), log, threads=8)
    out: dict[str, Any] = {b.precision: {k: b.parity.get(k) for k in (
        "max_abs_error", "max_rel_error", "min_label_agreement", "passed", "failures")}
        for b in builds}
    fp16 = next(b for b in builds if b.precision == "fp16")
    run16 = tensorrt_runner(fp16.model_file)
    cuda = ort.InferenceSession(str(onnx_path), providers=CUDA)
    out["trt_fp16_ms"] = median_ms(lambda: run16(feed), repeat)
    out["ort_cuda_ms"] = median_ms(lambda: cuda.run(None, feed), repeat)
    return out


def ort_parity(onnx_path: Path, feed: dict[str, np.ndarray], providers: list[str]
               ) -> dict[str, float]:
    """The graph on ``providers`` against ONNX Runtime CPU."""
    import onnxruntime as ort

    ref = ort.InferenceSession(str(onnx_path), providers=CPU).run(None, feed)[0]
    got = ort.InferenceSession(str(onnx_path), providers=providers).run(None, feed)[0]
    err = float(np.abs(got - ref).max())
    return {"max_abs_error": err, "max_rel_error": err / float(np.abs(ref).max()),
            "label_agreement": float((got.argmax(1) == ref.argmax(1)).mean())}


def segment_http(base: str, png: bytes, model: str, options: dict[str, Any]) -> np.ndarray:
    import httpx
    from PIL import Image
    import io

    r = httpx.post(f"{base}/segment", files={"file": ("p.png", png, "image/png")},
                   data={"options": json.dumps({"model": model, **options})},
                   headers={"Accept": "image/png"}, timeout=600)
    r.raise_for_status()
    return np.asarray(Image.open(io.BytesIO(r.content)))


def serving(repo: Path, model: str, meta: ModelMetadata, providers: list[str],
            size: tuple[int, int], repeat: int) -> dict[str, Any]:
    """/segment over HTTP (merge on the device) vs bare ONNX Runtime on the same passes."""
    import onnxruntime as ort

    rgb, png = photo("coffee", size[1], size[0])
    env = {"repository": repo, "ort_providers": json.dumps(providers), "max_passes": 256,
           "request_timeout_s": 600, "max_network_pixels": 1 << 31}
    settings = Settings(**{k: v for k, v in env.items() if k != "ort_providers"})
    onnx_path = repo / model / "1" / "model.onnx"
    out: dict[str, Any] = {}
    if providers == CPU:
        bare = bare_session(onnx_path, settings)
    else:
        from service.runtime.backends.embedded import session_options

        bare = ort.InferenceSession(str(onnx_path), session_options(settings), providers=providers)
    cases = {"single": {"scales": [1.0], "flip": False}, "official": {"scales": OFFICIAL,
                                                                      "flip": True}}
    labels: dict[str, np.ndarray] = {}
    with gateway({**env, "merge_on_device": "on"}, startup_timeout=600) as base:
        for name, opts in cases.items():
            plan = plan_segmentation(size, meta, scales=opts["scales"], flip=opts["flip"])
            feeds = materialise(plan.passes(rgb))
            out[f"{name}_bare_ms"] = median_ms(
                lambda: run_batched(bare, feeds, settings, meta.max_batch_size), repeat)
            out[f"{name}_http_ms"] = median_ms(
                lambda: segment_http(base, png, model, opts), repeat)
            out[f"{name}_passes"] = plan.n_passes
        labels["device"] = segment_http(base, png, model, cases["official"])
    with gateway({**env, "merge_on_device": "off"}, startup_timeout=600) as base:
        labels["gateway"] = segment_http(base, png, model, cases["official"])
    out["merge_agreement"] = float((labels["device"] == labels["gateway"]).mean())
    return out


def table(r: dict[str, Any], args: argparse.Namespace) -> str:
    """The one table (see benchmarks/gpu_check.sh for what each line means)."""
    def ratio(a: str, b: str, src: dict[str, Any]) -> str:
        return f"{src[a] / src[b]:.2f}  ({src[a]:.1f} ms / {src[b]:.1f} ms)"

    h, w = args.photo_size
    p = r.get("plans", {})
    s = r["serving"]
    rows = [("device", r["device"])]
    if "skipped" in p:
        rows += [("TensorRT FP16 / ORT-CUDA FP32, W48 1024x2048", f"n/a ({p['skipped']})")]
        rows += [(f"TensorRT {k} plan vs ONNX: max rel err, worst labels, passed", "n/a")
                 for k in ("FP32", "FP16")]
    else:
        rows += [("TensorRT FP16 / ORT-CUDA FP32, W48 1024x2048", ratio("trt_fp16_ms",
                                                                        "ort_cuda_ms", p))]
        rows += [(f"TensorRT {k.upper()} plan vs ONNX: max rel err, worst labels, passed",
                  f"{p[k]['max_rel_error']:.2e}, {p[k]['min_label_agreement']:.5f}, "
                  f"{p[k]['passed']}") for k in ("fp32", "fp16")]
    o = r["ort_parity"]
    rows += [
        (f"ORT {r['providers'][0].replace('ExecutionProvider', '')} vs CPU: max rel err, labels",
         f"{o['max_rel_error']:.2e}, {o['label_agreement']:.5f}"),
        ("/segment HTTP / bare, single scale", ratio("single_http_ms", "single_bare_ms", s)),
        (f"/segment HTTP / bare, 6 scales + flip ({s['official_passes']} passes)",
         ratio("official_http_ms", "official_bare_ms", s)),
        (f"official 6-scale + flip test, {w}x{h}, end to end", f"{s['official_http_ms']:.0f} ms"),
        ("merge on the device vs gateway merge: label agreement", f"{s['merge_agreement']:.5f}"),
        ("peak GPU memory", "n/a (no nvidia-smi)" if r["gpu_peak_mib"] is None
         else f"{r['gpu_peak_mib']:.0f} MiB"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--model", help="an existing segmentation entry (default: export w48)")
    ap.add_argument("--cpu", action="store_true", help="CPU providers, no TensorRT (tests)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--photo-size", type=lambda t: tuple(int(v) for v in t.split("x")),
                    default=(1024, 2048), help="HxW of the /segment photo (default 1024x2048)")
    ap.add_argument("--plan-min-label-agreement", type=float, default=0.9,
                    help="random-init weights have near-tied logits: FP16's default 0.99 is "
                    "for trained models")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    import onnxruntime as ort

    providers = CPU if args.cpu else CUDA
    if not args.cpu and "CUDAExecutionProvider" not in ort.get_available_providers():
        log("ONNX Runtime has no CUDA provider here: install the gpu extra (or pass --cpu)")
        return 2
    results: dict[str, Any] = {"providers": providers}
    with GpuMemory() as mem:
        model = args.model
        if model is None:
            log("exporting the random-init W48 Cityscapes model")
            model = export_w48(args.repo, args.cpu)
        meta = ModelMetadata.from_json((args.repo / model / "hrnet.json").read_text())
        onnx_path = args.repo / model / "1" / "model.onnx"
        rgb, _ = photo("coffee", 2048, 1024)
        from service.contract import IMAGE

        crop = meta.segmentation.crop_size
        full = {IMAGE: np.ascontiguousarray(
            rgb[: crop[0], : crop[1]].transpose(2, 0, 1)[None].astype(np.float32))}
        half = {IMAGE: full[IMAGE][:, :, ::2, ::2].copy()}
        log("TensorRT plans")
        try:  # a failed step leaves its lines n/a; the others still run and print
            results["plans"] = plans(onnx_path, meta, args.plan_min_label_agreement,
                                     args.repeat, full)
        except Exception as exc:
            log(f"TensorRT step failed: {exc!r}")
            results["plans"] = {"skipped": f"failed: {exc}"[:120]}
        log(f"ONNX Runtime {providers[0]} vs CPU")
        results["ort_parity"] = ort_parity(onnx_path, half, providers)
        log("the embedded gateway over HTTP vs bare ONNX Runtime")
        results["serving"] = serving(args.repo, model, meta, providers, args.photo_size,
                                     args.repeat)
    results["gpu_peak_mib"] = mem.peak
    results["device"] = "CPU (--cpu)" if args.cpu else _gpu_name()
    print(table(results, args), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def _gpu_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version",
                               "--format=csv,noheader", "-i", "0"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except Exception:
        return "unknown GPU"


if __name__ == "__main__":
    sys.exit(main())
