"""/detect: HTTP end-to-end vs bare ONNX Runtime on the same passes, and the gateway's own work.

    .venv/bin/python benchmarks/bench_detect.py [--repo DIR [--model NAME]] [--photo coffee]
        [--size 640x480] [--tta-scales 1,1.25] [--repeat 3] [--threads 2] [--masks]

Without --repo it exports the demo's random-init HRNetV2p-W18 Faster R-CNN (``python -m
model_export demo --tasks detection``: resize to fit 800x480, RPN 1000/300 proposals) into
``$TMPDIR/hrnet_bench_det_repo`` (~15 s, once); with --repo and no --model it takes the repository's
first detection model.

Cases: a single pass (scales [1], no flip), and TTA with --tta-scales and flip merged by NMS and by
WBF. Per round, interleaved so load changes on a shared machine hit all variants alike (round 0 is
a warm-up; medians of the rest):

* HTTP: a multipart ``POST /detect`` (PNG upload) to an in-process uvicorn gateway (the TTA case
  sends one request per merge method), with the server's ``timings_ms``;
* bare ORT: ``session.run`` of the very inputs the gateway sends (padded ``image`` and
  ``image_size`` of every pass from the task's own plan, batched like
  ``service/runner.py``), with the gateway's session options;
* gateway work alone: PNG decode, ``run_detect`` with a runner that replays the bare outputs
  (plan = resize + letterbox, merge, filtering, response model), and the JSON encoding. Its
  detections must equal the HTTP response's, which checks that bare ORT ran the gateway's inputs.

Ratio printed: HTTP/bare, the gateway's whole overhead on top of the network. Wall-clock times.

``--masks``: a Mask R-CNN instead (random-init ``mask_rcnn_hrnetv2p_w18`` with the demo's
settings, exported into ``$TMPDIR/hrnet_bench_mask_repo`` unless --repo names one), every
request with ``masks=true``: besides HTTP/bare it prints the mask work (the paste-back in
``postprocess`` and the RLE encoding in ``encode``, the server's own timings) divided by the
inference, with the instance count (random weights give the full 100).
"""

from __future__ import annotations

import argparse
import asyncio
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
from _common import bare_session, first_model, idle_cpu_note, photo, run_batched  # noqa: E402


def _export(repo: Path, threads: int, masks: bool = False) -> str:
    """The demo detection model in ``repo`` (exported unless already there); its name. With
    ``masks`` the same request for a Mask R-CNN."""
    from dataclasses import replace

    import torch

    from model_export.demo import demo_requests
    from model_export.pipeline import export_model

    torch.set_num_threads(threads)
    (req,) = demo_requests(repo, ["detection"])
    if masks:
        req = replace(req, arch="mask_rcnn_hrnetv2p_w18", name="mask_rcnn_hrnetv2p_w18_coco_demo")
    if not (repo / req.name / "1" / "model.onnx").is_file():
        export_model(req, log=lambda _m: None)
    return req.name


class _ReplayRunner:
    """Stands in for ``InferenceRunner``: returns recorded outputs instead of running a network."""

    def __init__(self) -> None:
        self.outputs: list[dict[str, np.ndarray]] = []

    async def run(self, meta, passes, timings=None, deadline=None):  # noqa: ANN001, ANN201
        if len(passes) != len(self.outputs):
            raise RuntimeError(f"{len(passes)} passes planned, {len(self.outputs)} recorded")
        return [dict(o) for o in self.outputs]


def _gateway_work(png: bytes, meta, options, runner: _ReplayRunner, loop) -> tuple[dict, dict]:
    """Decode + task with replayed outputs + JSON encoding; (stage seconds, response JSON)."""
    from _common import run_task_once

    from service.imaging.decode import decode_image
    from service.tasks import detection
    from service.timings import Timings

    t: dict[str, float] = {}
    t0 = time.perf_counter()
    rgb = decode_image(png)
    t["decode"] = time.perf_counter() - t0
    timings = Timings()
    resp = loop.run_until_complete(run_task_once(detection.TASK, rgb, meta, runner, options,
                                                 timings=timings))
    t1 = time.perf_counter()
    body = resp.model_dump_json()
    t["json"] = time.perf_counter() - t1
    t["preprocess"] = timings.stages.get("preprocess", 0.0)
    t["postprocess"] = timings.stages.get("postprocess", 0.0)
    t["all"] = time.perf_counter() - t0
    return t, json.loads(body)


def _same_detections(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x["label_index"] == y["label_index"] and abs(x["score"] - y["score"]) < 1e-5
        and np.allclose(x["box"], y["box"], atol=1e-2) for x, y in zip(a, b))


def _bench_case(png: bytes, meta, options: dict, session, settings, repeat: int,
                posts: dict[str, Callable[[], dict]], loop) -> dict:
    """Rounds of: one HTTP request per merge method, bare ORT, gateway work per merge method."""
    from _common import limits_for_benchmarks

    from service.imaging.decode import decode_image
    from service.tasks import detection
    from service.tasks.detection.schemas import DetectOptions

    rgb = decode_image(png)
    opts = {m: DetectOptions(model=meta.name, merge=m, **options) for m in posts}
    req = detection.TASK.resolve(next(iter(opts.values())), {}, meta, limits_for_benchmarks())
    inputs = detection.TASK.plan(req, meta, rgb.shape[:2]).passes(rgb)
    runner = _ReplayRunner()
    t: dict[str, list[float]] = defaultdict(list)
    stages: dict[str, list[dict]] = defaultdict(list)
    http_json: dict[str, dict] = {}
    work_json: dict[str, dict] = {}
    for _ in range(repeat + 1):
        for m, post in posts.items():
            t0 = time.perf_counter()
            http_json[m] = post()
            t[f"e2e_{m}"].append(time.perf_counter() - t0)
            stages[m].append(http_json[m]["timings_ms"])
        t0 = time.perf_counter()
        runner.outputs = run_batched(session, inputs, settings, meta.max_batch_size)
        t["bare"].append(time.perf_counter() - t0)
        for m in posts:
            w, work_json[m] = _gateway_work(png, meta, opts[m], runner, loop)
            for k, v in w.items():
                t[f"{k}_{m}"].append(v)
    out: dict = {k: statistics.median(v[1:]) for k, v in t.items()}
    out["passes"] = len(inputs)
    out["inputs"] = [list(i["image"].shape[1:]) for i in inputs]
    for m in posts:
        out[f"stages_{m}"] = {k: round(statistics.median(float(s.get(k, 0.0)) for s in stages[m][1:]), 1)
                              for k in stages[m][0]}
        out[f"dets_{m}"] = len(http_json[m]["detections"])
        out[f"match_{m}"] = _same_detections(http_json[m]["detections"], work_json[m]["detections"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--photo", default="coffee", help="skimage.data photo (coffee, astronaut, ...)")
    ap.add_argument("--size", default="640x480", help="image WxH")
    ap.add_argument("--tta-scales", default="1,1.25", help="scales of the TTA case (with flip)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (server and bare)")
    ap.add_argument("--masks", action="store_true", help="a Mask R-CNN, requests with masks=true")
    args = ap.parse_args()

    from _common import gateway

    from service.contract import ModelMetadata
    from service.settings import Settings

    repo = args.repo or Path(tempfile.gettempdir()) / (
        "hrnet_bench_mask_repo" if args.masks else "hrnet_bench_det_repo")
    repo.mkdir(parents=True, exist_ok=True)
    name = (args.model or (args.repo and first_model(repo, "detection"))
            or _export(repo, args.threads, args.masks))
    meta = ModelMetadata.from_json((repo / name / "hrnet.json").read_text())
    w, h = (int(v) for v in args.size.lower().split("x"))
    _, png = photo(args.photo, w, h)
    server = dict(repository=repo, ort_intra_threads=args.threads, ort_inter_threads=1,
                  max_passes=1024, max_network_pixels=1 << 40, request_timeout_s=3600)
    settings = Settings(**server)
    session = bare_session(repo / name / "1" / "model.onnx", settings)
    tta = [float(s) for s in args.tta_scales.split(",")]
    extra = {"masks": True} if args.masks else {}
    cases = [("single pass", {"scales": [1.0], "flip": False, **extra}, ["nms"]),
             (f"scales {tta} + flip", {"scales": tta, "flip": True, **extra}, ["nms", "wbf"])]
    rows = []
    loop = asyncio.new_event_loop()
    try:
        with gateway(server) as base, httpx.Client(timeout=3600) as client:
            for label, options, merges in cases:
                posts = {}
                for m in merges:
                    form = {"options": json.dumps({"model": name, "merge": m, **options})}

                    def post(form=form) -> dict:
                        resp = client.post(f"{base}/detect", data=form,
                                           files={"file": ("img.png", png, "image/png")})
                        resp.raise_for_status()
                        return resp.json()
                    posts[m] = post
                rows.append((label, merges, _bench_case(png, meta, options, session, settings,
                                                        args.repeat, posts, loop)))
    finally:
        loop.close()

    proto = meta.detection
    print(f"photo {args.photo} {w}x{h} PNG, model {name} ({meta.arch}, max_size "
          f"{tuple(proto.max_size) if proto else '?'}), ORT threads {args.threads}, "
          f"median of {args.repeat}; {idle_cpu_note()}")
    ms = lambda s: f"{s * 1000:.0f} ms"  # noqa: E731
    for label, merges, r in rows:
        print(f"{label}: {r['passes']} passes, inputs {r['inputs']}; bare ORT {ms(r['bare'])}")
        for m in merges:
            print(f"  merge {m}: HTTP end-to-end {ms(r[f'e2e_{m}'])}, ratio HTTP/bare "
                  f"{r[f'e2e_{m}'] / r['bare']:.2f}; gateway work alone {r[f'all_{m}'] * 1000:.1f} ms "
                  f"(decode {r[f'decode_{m}'] * 1000:.1f}, preprocess {r[f'preprocess_{m}'] * 1000:.1f}, "
                  f"postprocess {r[f'postprocess_{m}'] * 1000:.1f}, json {r[f'json_{m}'] * 1000:.1f}); "
                  f"{r[f'dets_{m}']} detections, same as replay: {r[f'match_{m}']}")
            st = r[f'stages_{m}']
            print(f"    server timings_ms {st}; server preprocess/inference "
                  f"{st['preprocess'] / st['inference']:.3f}")
            if args.masks:
                work = st["postprocess"] + st["encode"]
                print(f"    masks of {r[f'dets_{m}']} instances: paste (postprocess) "
                      f"{st['postprocess']:.1f} ms + RLE/JSON (encode) {st['encode']:.1f} ms = "
                      f"{work:.1f} ms; mask work / inference {work / st['inference']:.3f}")


if __name__ == "__main__":
    main()
