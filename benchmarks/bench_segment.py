"""/segment: HTTP end-to-end vs bare ONNX Runtime on the same passes, and the merge, new vs old.

    .venv/bin/python benchmarks/bench_segment.py [--repo DIR [--model NAME]] [--size 1024x512]
        [--multi-scales 0.5,0.75,1,1.25,1.5,1.75] [--repeat 3] [--threads 2] [--no-http]

Without --repo it exports a random-init hrnetv2_w18_small_v1 Cityscapes model (base size 1024,
crop 512x1024, like ``python -m model_export demo --tasks segmentation``) into a temp directory;
with --repo and no --model it takes the repository's first segmentation model.

For each case (scales [1] without flip; the multi-scale set with flip), measured side by side in
one run, medians of --repeat:

* bare ORT: ``session.run`` over the very passes the gateway runs, batched like its runner;
* merge new / old: ``service.tasks.segmentation.merge.merge_segmentation`` and the frozen merge
  (``_legacy_merge.py``) on the logits of those passes, with their label agreement;
* HTTP: a multipart ``POST /segment`` to a gateway process (``python -m service``), with its
  stage timings.

Ratios printed: HTTP/bare (the gateway's whole overhead: decode, resize, merge, encode, HTTP) and
merge new/old. Timings are wall-clock; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import httpx
import numpy as np

# Run as a script from anywhere: _common puts the repository root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bare_session, first_model, gateway, photo, run_batched  # noqa: E402


def _export(repo: Path, threads: int) -> str:
    import torch

    from model_export.exporters import SegmentationExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions

    torch.set_num_threads(threads)
    name = "bench_cityscapes"
    if not (repo / name / "1" / "model.onnx").is_file():
        export_model(ExportRequest(
            task="segmentation", arch="hrnetv2_w18_small_v1", dataset="cityscapes", name=name,
            repo=repo, random_init=True,
            options=SegmentationExport(base_size=1024, crop_size=(512, 1024), max_batch_size=4,
                                       parity_sizes=[(128, 256)], parity_batches=(1,)),
            triton=TritonOptions(instance_kind="cpu", warmup="none"),
        ), log=lambda _m: None)
    return name


def _bench_case(rgb: np.ndarray, meta, scales: list[float], flip: bool, session, max_batch: int,
                repeat: int, post: Callable[[], dict] | None) -> dict:
    """Rounds of: HTTP request (``post``), bare ORT over the same passes, old merge, new merge.

    Interleaved, so load changes on a shared machine hit all alike; round 0 is a warm-up.
    """
    from _legacy_merge import legacy_merge_segmentation

    from service.tasks.segmentation.merge import merge_segmentation
    from service.tasks.segmentation.plan import plan_segmentation

    plan = plan_segmentation(rgb.shape[:2], meta, scales=scales, flip=flip)
    passes = plan.passes(rgb)
    t = defaultdict(list)
    stages: list[dict] = []
    logits: list[np.ndarray] = []
    for i in range(repeat + 1):
        if post is not None:
            t0 = time.perf_counter()
            timings = post()
            t["e2e"].append(time.perf_counter() - t0)
            stages.append(timings)
        t0 = time.perf_counter()
        logits = [r["logits"] for r in run_batched(session, passes, max_batch)]
        t["bare"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        old = legacy_merge_segmentation(plan, logits)
        t["merge_old"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        new = merge_segmentation(plan, logits)
        t["merge_new"].append(time.perf_counter() - t0)
    out = {k: statistics.median(v[1:]) for k, v in t.items()}
    out["passes"] = len(passes)
    out["agree"] = float((new.labels == old.labels).mean())
    if stages:
        out["stages"] = {k: round(statistics.median(float(s.get(k, 0.0)) for s in stages[1:]), 1)
                         for k in stages[0]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--size", default="1024x512", help="image WxH")
    ap.add_argument("--multi-scales", default="0.5,0.75,1,1.25,1.5,1.75")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (server and bare)")
    ap.add_argument("--no-http", action="store_true", help="only bare ORT and the merges")
    args = ap.parse_args()

    from service.contract import ModelMetadata
    from service.settings import Settings

    repo = args.repo or Path(tempfile.gettempdir()) / "hrnet_bench_repo"
    repo.mkdir(parents=True, exist_ok=True)
    name = args.model or (args.repo and first_model(repo, "segmentation")) or _export(repo, args.threads)
    meta = ModelMetadata.from_json((repo / name / "hrnet.json").read_text())
    w, h = (int(v) for v in args.size.lower().split("x"))
    rgb, png = photo("coffee", w, h)
    server = dict(repository=repo, ort_intra_threads=args.threads, ort_inter_threads=1,
                  max_passes=1024, max_network_pixels=1 << 40, request_timeout_s=3600)
    settings = Settings(**server)
    max_batch = max(1, min(meta.max_batch_size, settings.max_batch))

    session = bare_session(repo / name / "1" / "model.onnx", settings)
    multi = [float(s) for s in args.multi_scales.split(",")]
    configs = [("scales [1]", [1.0], False), (f"scales {multi} + flip", multi, True)]
    rows = []
    with contextlib.ExitStack() as stack, httpx.Client(timeout=3600) as client:
        base = None if args.no_http else stack.enter_context(gateway(server))
        for label, scales, flip in configs:
            post = None
            if base is not None:
                form = {"options": json.dumps({"model": name, "scales": scales, "flip": flip})}
                files = {"file": ("img.png", png, "image/png")}

                def post(form=form, files=files) -> dict:
                    resp = client.post(f"{base}/segment", files=files, data=form)
                    resp.raise_for_status()
                    return resp.json()["timings_ms"]

            rows.append((label, _bench_case(rgb, meta, scales, flip, session, max_batch,
                                            args.repeat, post)))

    print(f"image {w}x{h}, model {name} ({meta.arch}, base {meta.segmentation.base_size}, crop "
          f"{tuple(meta.segmentation.crop_size)}), ORT threads {args.threads}, median of {args.repeat}")
    for label, r in rows:
        line = (f"{label}: {r['passes']} passes; bare ORT {r['bare'] * 1000:.0f} ms; merge new "
                f"{r['merge_new'] * 1000:.0f} ms vs old {r['merge_old'] * 1000:.0f} ms, ratio new/old "
                f"{r['merge_new'] / r['merge_old']:.2f} (labels agree {r['agree'] * 100:.4f}%)")
        if "e2e" in r:
            line += (f"; HTTP end-to-end {r['e2e'] * 1000:.0f} ms, ratio HTTP/bare "
                     f"{r['e2e'] / r['bare']:.2f}; server stages (ms) {r['stages']}")
        print(line)


if __name__ == "__main__":
    main()
