"""/segment through Triton with the official merge on the server (``<model>__segment``) against
the same through Triton with the gateway's merge (``HRNET_MERGE_ON_DEVICE=off``): bytes moved
between Triton and the gateway, and time, side by side in one run, on this machine's CPU.

    .venv/bin/python benchmarks/bench_served_merge.py [--repo DIR --model NAME] [--repeat 3]
        [--threads 2] [--protocol grpc]

The model is bench_segment.py's (a random-init hrnetv2_w18_small_v1 with the official
Cityscapes protocol, exported once into $TMPDIR/hrnet_bench_official); its served-merge models
are written beside it if missing. A CPU tritonserver (scripts/install_triton.sh) serves the CPU
twins of the network, ``__merge`` and ``__segment``, each ONNX graph on ``--threads`` intra-op
threads; two gateway processes (``python -m service``) talk to it, one per merge. Rounds
alternate the two; round 0 is a warm-up; figures are medians.

Per case (2048x1024 single pass; 2048x1024 official 6 scales + flip: 30 passes; 600x400 6
scales + flip):

* bytes, from the request's plan: gateway -> Triton (the passes' float32 pixels, plus the merge
  tables for the served merge) and Triton -> gateway (the passes' float32 logits, or the uint8
  label map);
* time: HTTP end to end of each, served / gateway, and the gateway's stages (``Server-Timing``):
  with the served merge, ``inference`` holds the network *and* the merge, ``postprocess`` is 0;
* agreement: the fraction of equal labels of the two answers.

On a CPU the merge graph is slower than the gateway's row-blocked numpy merge
(bench_device_merge.py), so the served merge pays off on CPU instances only where bytes cost
more than that CPU time (a remote Triton over a slow link), which is why ``auto`` uses it on GPU
instances only and this benchmark sets ``HRNET_MERGE_ON_DEVICE=on``; on a GPU server the merge
runs on the GPU (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, first_model, gateway, idle_cpu_note, photo  # noqa: E402
from bench_segment import MULTI, _export, _timings  # noqa: E402

from service.contract import MERGE_MODEL_SUFFIX, SERVED_MERGE_SUFFIX, ModelMetadata  # noqa: E402

CASES = [("2048x1024 single pass", (2048, 1024), [1.0], False),
         ("2048x1024 official 6 scales + flip", (2048, 1024), MULTI, True),
         ("600x400 6 scales + flip", (600, 400), MULTI, True)]


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def plan_bytes(meta: ModelMetadata, rgb: np.ndarray, scales: list[float], flip: bool
               ) -> dict[str, int]:
    """What crosses each way with each merge, from the request's plan (and the served feed
    itself, built as the gateway builds it)."""
    from service.tasks.segmentation.merge_graph import served_feed
    from service.tasks.segmentation.plan import plan_segmentation

    plan = plan_segmentation(rgb.shape[:2], meta, scales=scales, flip=flip)
    n_cls, stride = len(meta.labels), plan.output_stride
    logits = sum(n_cls * -(-sp.pass_size[0] // stride) * -(-sp.pass_size[1] // stride) * 4
                 * sp.n_regions * plan.passes_per_region for sp in plan.scales)
    feed = served_feed(plan, plan.passes(rgb), n_cls)
    h, w = rgb.shape[:2]
    return {"passes": plan.n_passes, "pixels_up": feed["pixels"].nbytes,
            "served_up": sum(v.nbytes for v in feed.values()), "gateway_down": logits,
            "served_down": h * w + 1}


def _post(client: httpx.Client, url: str, png: bytes, options: dict) -> httpx.Response:
    r = client.post(f"{url}/segment", files={"file": ("img.png", png, "image/png")},
                    data={"options": json.dumps(options)}, headers={"Accept": "image/png"})
    r.raise_for_status()
    return r


def _median(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def ensure_served_merge(repo: Path, name: str) -> None:
    """Write ``name``'s served-merge models if the cached export predates them."""
    if not (repo / f"{name}{SERVED_MERGE_SUFFIX}").is_dir():
        from model_export.served_merge import write_served_merge

        meta = ModelMetadata.from_json((repo / name / "hrnet.json").read_text())
        write_served_merge(repo, meta)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads in Triton")
    ap.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from model_export.triton_cpu import write_cpu_variant, write_python_variant
    from tests.triton.harness import TritonServer, install_triton

    repo = args.repo or Path(tempfile.gettempdir()) / "hrnet_bench_official"
    repo.mkdir(parents=True, exist_ok=True)
    name = args.model or (args.repo and first_model(repo, "segmentation")) or _export(repo, args.threads)
    meta = ModelMetadata.from_json((repo / name / "hrnet.json").read_text())
    if meta.segmentation.merge_graph is None:  # exported before entries had their merge graph
        if args.repo:
            raise SystemExit(f"{name} in {repo} has no merge graph: export it again")
        for stale in repo.glob(f"{name}*"):
            shutil.rmtree(stale)
        name = _export(repo, args.threads)
        meta = ModelMetadata.from_json((repo / name / "hrnet.json").read_text())
    ensure_served_merge(repo, name)
    install = install_triton()
    work = Path(tempfile.mkdtemp(prefix="bench_served_merge_"))
    twin = work / "triton_repo"
    for entry in (name, f"{name}{MERGE_MODEL_SUFFIX}"):
        write_cpu_variant(repo / entry, twin, install.pydeps, ort_threads=args.threads)
    write_python_variant(repo / f"{name}{SERVED_MERGE_SUFFIX}", twin, install.pydeps)
    triton = TritonServer(install, twin, work / "triton.log").start().wait_ready()
    common = dict(backend="triton", triton_url=triton.url(args.protocol),
                  triton_protocol=args.protocol, repository=repo, max_network_pixels=1 << 40,
                  max_passes=4096, request_timeout_s=3600, triton_timeout_s=3600)
    print(f"# {idle_cpu_note()}; Triton CPU twin over {args.protocol}, {args.threads} ORT "
          f"threads per graph; model {name}; {args.repeat} repeats after a warm-up")
    try:
        # "on": these are CPU instances, where "auto" leaves the merge to the gateway.
        with gateway({**common, "merge_on_device": "on"}) as served_url, \
                gateway({**common, "merge_on_device": "off"}) as plain_url, \
                httpx.Client(timeout=3600) as client:
            for label, (w, h), scales, flip in CASES:
                rgb, png = photo("coffee", w, h)
                nbytes = plan_bytes(meta, rgb, scales, flip)
                options = {"model": name, "scales": scales, "flip": flip}
                t: dict[str, list[float]] = {"served": [], "gateway": []}
                stages: dict[str, list[dict[str, float]]] = {"served": [], "gateway": []}
                answers: dict[str, bytes] = {}
                for _ in range(args.repeat + 1):
                    for key, url in (("served", served_url), ("gateway", plain_url)):
                        t0 = time.perf_counter()
                        r = _post(client, url, png, options)
                        t[key].append(time.perf_counter() - t0)
                        stages[key].append(_timings(r))
                        answers[key] = r.content
                labels = {k: np.asarray(Image.open(io.BytesIO(v))) for k, v in answers.items()}
                agree = float((labels["served"] == labels["gateway"]).mean())
                served, plain = _median(t["served"]), _median(t["gateway"])
                med = {k: {s: round(_median([x.get(s, 0.0) for x in v]), 1)
                           for s in ("preprocess", "inference", "postprocess")}
                       for k, v in stages.items()}
                print(f"{label}: {nbytes['passes']} passes")
                print(f"  gateway -> Triton: {_mb(nbytes['pixels_up'])} of passes "
                      f"(served merge: {_mb(nbytes['served_up'])} with the tables, "
                      f"{nbytes['served_up'] / nbytes['pixels_up']:.4f}x)")
                print(f"  Triton -> gateway: {_mb(nbytes['gateway_down'])} of logits vs "
                      f"{_mb(nbytes['served_down'])} of labels with the served merge "
                      f"({nbytes['served_down'] / nbytes['gateway_down']:.4f}x)")
                print(f"  HTTP: served {served * 1000:.0f} ms, gateway merge {plain * 1000:.0f} ms,"
                      f" served / gateway {served / plain:.3f}; labels agree {agree * 100:.4f}%")
                print(f"  stages (ms): served {med['served']}; gateway merge {med['gateway']}")
    finally:
        triton.stop()


if __name__ == "__main__":
    main()
