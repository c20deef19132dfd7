"""End-to-end /segment latency over HTTP vs bare ONNX Runtime time of the same network passes.

    .venv/bin/python benchmarks/bench_segment.py [--repo DIR --model NAME] [--size 1024x512]
        [--multi-scales 0.5,0.75,1,1.25,1.5,1.75] [--repeat 3] [--threads 2]

Without --repo it exports a random-init hrnetv2_w18_small_v1 Cityscapes model (base size 1024,
crop 512x1024, so a 1024x512 image is scale 1 and larger scales use sliding windows) into a temp
directory. For each configuration (scales [1]; multi-scale + flip) it reports the median HTTP
latency, the median time of ``session.run`` over the very passes/batches the gateway runs, and
their ratio (the gateway's overhead: decode, resize, merge, encode, HTTP).
"""

from __future__ import annotations

import argparse
import io
import sys
import json
import statistics
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

# Run as a script from anywhere: the repository root holds ``service`` and ``model_export``.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _export(repo: Path, threads: int) -> str:
    import torch

    from model_export.pipeline import ExportRequest, export_model

    torch.set_num_threads(threads)
    name = "bench_cityscapes"
    if not (repo / name / "1" / "model.onnx").is_file():
        export_model(ExportRequest(
            task="segmentation", arch="hrnetv2_w18_small_v1", dataset="cityscapes", name=name,
            repo=repo, random_init=True, base_size=1024, crop_size=(512, 1024), max_batch_size=4,
            instance_kind="cpu", warmup="none", parity_sizes=[(128, 256)], parity_batches=(1,),
        ), log=lambda _m: None)
    return name


def _photo(w: int, h: int) -> tuple[np.ndarray, bytes]:
    from skimage import data

    im = Image.fromarray(data.coffee()).resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return np.asarray(im), buf.getvalue()


def _bare_ort(session, rgb: np.ndarray, meta, scales, flip: bool, max_batch: int, repeat: int) -> tuple[float, int]:
    """(median seconds, number of passes) of session.run over the gateway's passes, batched like the runner."""
    from service.tta import make_passes, plan_segmentation

    plan = plan_segmentation(rgb.shape[:2], meta, scales=scales, flip=flip)
    passes = make_passes(rgb, plan)
    groups = defaultdict(list)
    for p in passes:
        groups[p.shape].append(p)
    batches = [np.stack(g[i : i + max_batch]) for g in groups.values() for i in range(0, len(g), max_batch)]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            session.run(None, {"image": b})
        times.append(time.perf_counter() - t0)
    return statistics.median(times), len(passes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--size", default="1024x512", help="image WxH")
    ap.add_argument("--multi-scales", default="0.5,0.75,1,1.25,1.5,1.75")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (server and bare)")
    args = ap.parse_args()

    import onnxruntime as ort
    import uvicorn

    from service.app import create_app
    from service.metadata import ModelMetadata
    from service.settings import Settings

    repo = args.repo or Path(tempfile.gettempdir()) / "hrnet_bench_repo"
    repo.mkdir(parents=True, exist_ok=True)
    name = args.model or _export(repo, args.threads)
    meta = ModelMetadata.from_json((repo / name / "hrnet.json").read_text())
    w, h = (int(v) for v in args.size.lower().split("x"))
    rgb, png = _photo(w, h)
    settings = Settings(repository=repo, ort_intra_threads=args.threads, ort_inter_threads=1,
                        max_passes=1024, request_timeout_s=3600)
    max_batch = max(1, min(meta.max_batch_size, settings.max_batch))

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}/segment"

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    session = ort.InferenceSession(str(repo / name / "1" / "model.onnx"), opts,
                                   providers=["CPUExecutionProvider"])
    multi = [float(s) for s in args.multi_scales.split(",")]
    configs = [("scales [1]", [1.0], False), (f"scales {multi} + flip", multi, True)]
    rows = []
    try:
        with httpx.Client(timeout=3600) as client:
            for label, scales, flip in configs:
                form = {"options": json.dumps({"model": name, "scales": scales, "flip": flip})}
                files = {"file": ("img.png", png, "image/png")}
                client.post(url, files=files, data=form).raise_for_status()  # warm-up
                lat, server_ms = [], []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    r = client.post(url, files=files, data=form)
                    lat.append(time.perf_counter() - t0)
                    r.raise_for_status()
                    server_ms.append(r.json()["timings_ms"])
                bare, n_passes = _bare_ort(session, rgb, meta, scales, flip, max_batch, args.repeat)
                e2e = statistics.median(lat)
                stages = {k: statistics.median(t.get(k, 0.0) for t in server_ms) for k in server_ms[0]}
                rows.append((label, n_passes, e2e, bare, stages))
    finally:
        server.should_exit = True
        thread.join(timeout=30)

    print(f"image {w}x{h}, model {name} ({meta.arch}, base {meta.segmentation.base_size}, crop "
          f"{meta.segmentation.crop_size}), ORT threads {args.threads}, median of {args.repeat}")
    for label, n, e2e, bare, stages in rows:
        print(f"{label}: {n} passes; HTTP end-to-end {e2e * 1000:.0f} ms; bare ORT {bare * 1000:.0f} ms; "
              f"ratio {e2e / bare:.2f}; server stages (ms) {stages}")


if __name__ == "__main__":
    main()
