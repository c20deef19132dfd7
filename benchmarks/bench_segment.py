"""/segment: the gateway over HTTP vs bare ONNX Runtime on the same passes, its memory vs the
official code, its throughput at concurrency 4, the encode cost of each answer format, and the
merge (new vs the frozen pre-rewrite one).

    .venv/bin/python benchmarks/bench_segment.py [--repo DIR --model NAME] [--repeat 3]
        [--threads 2] [--skip latency,early,heap,formats,memory,throughput,merge]

Without --repo it exports (once, cached in $TMPDIR/hrnet_bench_official) a random-init
hrnetv2_w18_small_v1 with the *official* Cityscapes protocol: base size 2048, crop 1024x2048,
so a 2048x1024 image at the 6 official scales + flip runs 30 passes (6 whole, 24 windows).
The gateway runs as its own process (``python -m service``, embedded ONNX Runtime with
--threads intra-op threads); "bare" is ``session.run`` with the gateway's own session options
over the very passes the gateway runs, batched as its runner batches them. Rounds interleave the
variants so that load changes on a shared machine hit them alike; round 0 is a warm-up;
figures are medians.

* latency: HTTP end-to-end / bare and the server's own inference stage / bare, per case
  (2048x1024 single pass; 2048x1024 official 6 scales + flip; 600x400 6 scales + flip);
* early: the multi-scale cases with the early merge and without (two more gateways, with
  ``early_merge=on`` and ``off``; the default ``auto`` is on only where ORT leaves cores free,
  e.g. ``--threads 1`` on 2 cores): HTTP/bare of both, HTTP on/off, the postprocess stage (what is
  left of the merge after the last pass) of both;
* heap: requests (2048x1024 single pass; 600x400 at scale 0.25; 2048x1024 6 scales + flip) with
  the kept heap (the default ``malloc_keep_mb``) and with glibc's own heaps (two more gateways):
  HTTP/bare of both, HTTP kept/glibc's, the gateway's page faults and system CPU per request,
  the throughput case's req/s of both, and both gateways' peak RSS;
* formats: the server's encode stage / its inference for each answer: JSON (label map PNG in
  base64), image/png, application/octet-stream, application/x-npy (2048x1024 single pass);
* memory: a fresh gateway process's RSS at rest, its peak and its RSS after the 2048x1024
  6 scales + flip request, against the official procedure in PyTorch (``_official_segment.py``,
  its own process) on the same image and weights, with their label agreement and times;
* throughput: requests/s of 4 concurrent clients (small network inputs: scale 0.25, one pass
  each) against bare ORT running the same passes from 2 threads (the gateway's default slots);
* merge: the merge alone, new / old, with label agreement: on the 2048x1024 6-scale logits, and
  on a single 2048x1024 pass's (the benchmark model's, and logits made of regions: blurred-photo
  colours, as a trained model's maps).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

# Run as a script from anywhere: _common puts the repository root on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    bare_session, first_model, gateway, idle_cpu_note, materialise, photo, requests_per_s,
    run_batched,
)
from tests.helpers import photo_logits  # noqa: E402

MULTI = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
FORMATS = {"json": "application/json", "png": "image/png", "raw": "application/octet-stream",
           "npy": "application/x-npy"}


def _export(repo: Path, threads: int) -> str:
    import torch

    from model_export.exporters import SegmentationExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions

    torch.set_num_threads(threads)
    name = "bench_cityscapes_official"
    if not (repo / name / "1" / "model.onnx").is_file():
        export_model(ExportRequest(
            task="segmentation", arch="hrnetv2_w18_small_v1", dataset="cityscapes", name=name,
            repo=repo, random_init=True,
            options=SegmentationExport(max_batch_size=4, parity_sizes=[(128, 256)],
                                       parity_batches=(1,)),
            triton=TritonOptions(instance_kind="cpu", warmup="none"),
        ), log=lambda _m: None)
    return name


def _median(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def _post(client: httpx.Client, url: str, png: bytes, options: dict, accept: str = FORMATS["json"]
          ) -> httpx.Response:
    resp = client.post(f"{url}/segment", files={"file": ("img.png", png, "image/png")},
                       data={"options": json.dumps(options)}, headers={"Accept": accept})
    resp.raise_for_status()
    return resp


def _alternating(pair: tuple, round_: int) -> tuple:
    """The two variants of a side-by-side section, first one then the other on alternate rounds,
    so that neither always runs right after the bare run."""
    return pair if round_ % 2 else pair[::-1]


def _timings(resp: httpx.Response) -> dict[str, float]:
    """The server's stage times (ms) from its ``Server-Timing`` header."""
    out = {}
    for part in resp.headers["server-timing"].split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur)
    return out


def _feeds(meta, rgb: np.ndarray, scales: list[float], flip: bool) -> list[dict[str, np.ndarray]]:
    from service.tasks.segmentation.plan import plan_segmentation

    return materialise(plan_segmentation(rgb.shape[:2], meta, scales=scales, flip=flip).passes(rgb))


def latency(client, url, meta, name, session, settings, repeat) -> list[str]:
    lines = []
    cases = [("2048x1024 single pass", (2048, 1024), [1.0], False),
             ("2048x1024 official 6 scales + flip", (2048, 1024), MULTI, True),
             ("600x400 6 scales + flip", (600, 400), MULTI, True)]
    for label, (w, h), scales, flip in cases:
        rgb, png = photo("coffee", w, h)
        feeds = _feeds(meta, rgb, scales, flip)
        options = {"model": name, "scales": scales, "flip": flip}
        t: dict[str, list[float]] = defaultdict(list)
        stages: dict[str, list[dict[str, float]]] = defaultdict(list)
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            run_batched(session, feeds, settings, meta.max_batch_size)
            bare_s = time.perf_counter() - t0
            # "after idle": the gateway sat idle while bare ORT ran (over the default 2 s idle
            # release for the large cases, so their memory was handed back); "back to back":
            # the same request again at once, as a busy gateway serves them.
            for key in ("idle", "busy"):
                t0 = time.perf_counter()
                timings = _timings(_post(client, url, png, options))
                t[key].append(time.perf_counter() - t0)
                stages[key].append(timings)
            t["bare"].append(bare_s)  # round 0 warms up: _median leaves it out
        bare = _median(t["bare"])
        for key, what in (("idle", "after idle"), ("busy", "back to back")):
            http = _median(t[key])
            inference = _median([s["inference"] / 1000 for s in stages[key]])
            med = {k: round(_median([s.get(k, 0.0) for s in stages[key]]), 1) for k in stages[key][0]}
            # The spread of the ratio within a round (request and bare run side by side): on a
            # shared machine it says how far one median can be trusted.
            rounds = [h / b for h, b in zip(t[key][1:], t["bare"][1:])] or [http / bare]
            lines.append(f"{label}, {what}: {len(feeds)} passes; bare ORT {bare * 1000:.0f} ms; HTTP "
                         f"{http * 1000:.0f} ms; ratio HTTP/bare {http / bare:.3f} (rounds "
                         f"{min(rounds):.2f}-{max(rounds):.2f}); server inference/bare "
                         f"{inference / bare:.3f}; server stages (ms) {med}")
    return lines


def early(meta, name, session, settings, server, repeat) -> list[str]:
    """The multi-scale cases with the early merge and without it, side by side: two more
    gateways with ``early_merge=on`` and ``off``; rounds interleave bare, on and off."""
    lines = []
    cases = [("2048x1024 official 6 scales + flip", (2048, 1024)), ("600x400 6 scales + flip", (600, 400))]
    with gateway(dict(server, early_merge="on")) as url, gateway(dict(server, early_merge="off")) \
            as off_url, httpx.Client(timeout=3600) as client, httpx.Client(timeout=3600) as off:
        for label, (w, h) in cases:
            rgb, png = photo("coffee", w, h)
            feeds = _feeds(meta, rgb, MULTI, True)
            options = {"model": name, "scales": MULTI, "flip": True}
            t: dict[str, list[float]] = defaultdict(list)
            post: dict[str, list[float]] = defaultdict(list)
            for i in range(repeat + 1):
                t0 = time.perf_counter()
                run_batched(session, feeds, settings, meta.max_batch_size)
                t["bare"].append(time.perf_counter() - t0)
                for key, c, u in _alternating((("on", client, url), ("off", off, off_url)), i):
                    t0 = time.perf_counter()
                    timings = _timings(_post(c, u, png, options))
                    t[key].append(time.perf_counter() - t0)
                    post[key].append(timings["postprocess"])
            bare = _median(t["bare"])
            on, off_s = _median(t["on"]), _median(t["off"])
            lines.append(
                f"early merge, {label}: HTTP/bare on {on / bare:.3f}, off {off_s / bare:.3f}; "
                f"HTTP on/off {on / off_s:.3f}; postprocess after the last pass on "
                f"{_median(post['on']):.0f} ms, off {_median(post['off']):.0f} ms "
                f"(ratio {_median(post['on']) / _median(post['off']):.2f})")
    return lines


def heap(meta, name, session, settings, server, repeat, requests: int) -> list[str]:
    """Requests with the kept heap (``malloc_keep_mb``, the default) and with glibc's own heaps
    (``malloc_keep_mb=0``): two more gateways, rounds interleaving bare and both; per request
    the HTTP time, the gateway's page faults and system CPU; the throughput case's rate of both;
    then both gateways' peak RSS."""
    lines = []
    cases = [("2048x1024 single pass", (2048, 1024), [1.0], False, 3),
             ("600x400 at scale 0.25 (one pass)", (600, 400), [0.25], False, 20),
             ("2048x1024 official 6 scales + flip", (2048, 1024), MULTI, True, 1)]
    with gateway(server) as url, gateway(dict(server, malloc_keep_mb=0)) as glibc_url, \
            httpx.Client(timeout=3600) as client:
        for label, (w, h), scales, flip, n in cases:
            rgb, png = photo("coffee", w, h)
            feeds = _feeds(meta, rgb, scales, flip)
            options = {"model": name, "scales": scales, "flip": flip}
            for u in (url, glibc_url):
                _post(client, u, png, options)
            t: dict[str, list[float]] = defaultdict(list)
            faults: dict[str, list[float]] = defaultdict(list)
            system: dict[str, list[float]] = defaultdict(list)
            for i in range(repeat + 1):
                t0 = time.perf_counter()
                for _ in range(n):
                    run_batched(session, feeds, settings, meta.max_batch_size)
                t["bare"].append((time.perf_counter() - t0) / n)
                for key, u in _alternating((("kept", url), ("glibc", glibc_url)), i):
                    f0, s0, t0 = u.minor_faults(), u.system_seconds(), time.perf_counter()
                    for _ in range(n):
                        _post(client, u, png, options)
                    t[key].append((time.perf_counter() - t0) / n)
                    faults[key].append((u.minor_faults() - f0) / n)
                    system[key].append((u.system_seconds() - s0) / n)
            bare, kept, own = _median(t["bare"]), _median(t["kept"]), _median(t["glibc"])
            lines.append(
                f"heap, {label}: HTTP/bare kept {kept / bare:.3f}, glibc's {own / bare:.3f}; "
                f"HTTP kept/glibc's {kept / own:.3f}; per request page faults "
                f"{_median(faults['kept']):.0f} vs {_median(faults['glibc']):.0f}, system CPU "
                f"{_median(system['kept']) * 1000:.0f} vs {_median(system['glibc']) * 1000:.0f} ms")
        # The throughput case's load: 4 clients at once, small requests.
        _, png = photo("coffee", 600, 400)
        options = {"model": name, "scales": [0.25]}
        rate: dict[str, list[float]] = defaultdict(list)
        for i in range(repeat + 1):
            for key, u in _alternating((("kept", url), ("glibc", glibc_url)), i):
                rate[key].append(_concurrent(u, png, options, requests))
        kept, own = _median(rate["kept"]), _median(rate["glibc"])
        lines.append(f"heap, {requests} requests of 600x400 at scale 0.25 from 4 clients: kept "
                     f"{kept:.2f} req/s, glibc's {own:.2f} req/s, ratio {kept / own:.3f}")
        # The 30-pass case is the largest: the peaks are its.
        lines.append(f"heap, peak RSS kept {url.memory_mb()[1]:.0f} MiB, glibc's "
                     f"{glibc_url.memory_mb()[1]:.0f} MiB")
    return lines


def formats(client, url, name, repeat) -> list[str]:
    rgb, png = photo("coffee", 2048, 1024)
    options = {"model": name, "scales": [1.0]}
    rows = []
    got: dict[str, list[dict]] = defaultdict(list)
    size: dict[str, int] = {}
    for _ in range(repeat + 1):
        for fmt, accept in FORMATS.items():
            resp = _post(client, url, png, options, accept)
            got[fmt].append(_timings(resp))
            size[fmt] = len(resp.content)
    for fmt in FORMATS:
        enc = _median([s["encode"] for s in got[fmt]])
        inf = _median([s["inference"] for s in got[fmt]])
        rows.append(f"  {fmt:<5} encode {enc:6.1f} ms, encode/inference {enc / inf:.3f}, "
                    f"answer {size[fmt] / 1024:.0f} KiB")
    return ["answer formats, 2048x1024 single pass:"] + rows


def memory(repo: Path, name: str, server: dict, threads: int) -> list[str]:
    from PIL import Image

    rgb, png = photo("coffee", 2048, 1024)
    # Memory handed back 2 s after the last large request (HRNET_RELEASE_MEMORY_IDLE_S's default):
    # the samples "at rest" and "after" are taken 3 s after a request.
    with gateway(server) as url, httpx.Client(timeout=3600) as client:
        _post(client, url, png, {"model": name, "scales": [0.5]})
        _post(client, url, photo("coffee", 600, 400)[1], {"model": name, "scales": MULTI, "flip": True})
        time.sleep(3.0)
        rest, _ = url.memory_mb()
        # The peak of this request alone: the warm-ups' own (the 600x400 6-scale one reached
        # 1.2-1.5 GB) would otherwise stand in for it.
        url.reset_peak()
        t0 = time.perf_counter()
        resp = _post(client, url, png, {"model": name, "scales": MULTI, "flip": True}, FORMATS["png"])
        took = time.perf_counter() - t0
        mid, peak = url.memory_mb()
        time.sleep(3.0)
        after, _ = url.memory_mb()
        ours = np.asarray(Image.open(__import__("io").BytesIO(resp.content)))
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "img.png"
        image.write_bytes(png)
        labels = Path(tmp) / "labels.npy"
        out = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("_official_segment.py")), "--repo",
             str(repo), "--model", name, "--image", str(image), "--scales",
             ",".join(map(str, MULTI)), "--flip", "--threads", str(threads), "--labels",
             str(labels)], capture_output=True, text=True, check=True)
        official = json.loads(out.stdout.strip().splitlines()[-1])
        agree = float((np.load(labels) == ours).mean())
    return [
        "memory, 2048x1024 official 6 scales + flip (30 passes):",
        f"  gateway: RSS at rest {rest:.0f} MiB, peak {peak:.0f} MiB, after {after:.0f} MiB "
        f"({(after / rest - 1) * 100:+.1f}% of rest); request {took:.1f} s",
        f"  official PyTorch code: RSS at rest {official['rest_mb']:.0f} MiB, peak "
        f"{official['peak_mb']:.0f} MiB; {official['seconds']:.1f} s",
        f"  ratio peak gateway/official {peak / official['peak_mb']:.2f}; time gateway/official "
        f"{took / official['seconds']:.2f}; labels agree {agree * 100:.4f}%",
    ]


def _concurrent(url: str, png: bytes, options: dict, requests: int, clients: int = 4) -> float:
    """``requests`` posts shared by ``clients`` concurrent HTTP clients; requests per second."""
    return requests_per_s(lambda c: _post(c, url, png, options), requests, clients)


def throughput(client, url, meta, name, session, settings, requests: int) -> list[str]:
    rgb, png = photo("coffee", 600, 400)
    options = {"model": name, "scales": [0.25]}
    feeds = _feeds(meta, rgb, [0.25], False)
    _post(client, url, png, options)  # warm-up
    rows = []
    for round_ in range(2):
        cpu_gw, cpu_client = url.cpu_seconds(), time.process_time()
        gw = _concurrent(url, png, options, requests)
        cpu_gw, cpu_client = url.cpu_seconds() - cpu_gw, time.process_time() - cpu_client
        t0, cpu_bare = time.perf_counter(), time.process_time()
        with ThreadPoolExecutor(settings.max_concurrency) as pool:
            list(pool.map(lambda _: run_batched(session, feeds, settings, meta.max_batch_size),
                          range(requests)))
        bare = requests / (time.perf_counter() - t0)
        cpu_bare = time.process_time() - cpu_bare
        if round_:
            ms = {k: 1000 * v / requests
                  for k, v in (("gateway", cpu_gw), ("client", cpu_client), ("bare", cpu_bare))}
            rows.append(f"throughput, {requests} requests of a 600x400 image at scale 0.25 "
                        f"({feeds[0]['image'].shape[2]}x{feeds[0]['image'].shape[1]} network input): "
                        f"gateway at concurrency 4 {gw:.2f} req/s, bare ORT from "
                        f"{settings.max_concurrency} threads {bare:.2f} req/s, ratio {gw / bare:.3f}")
            # On a machine whose cores are all busy, req/s is about cores / CPU per request: the
            # ratio cannot exceed bare / (gateway + client), the clients being on the same cores.
            rows.append(f"  CPU ms per request: gateway process {ms['gateway']:.1f} (bare ORT "
                        f"{ms['bare']:.1f}, so the gateway's own {ms['gateway'] - ms['bare']:.1f}), "
                        f"HTTP clients {ms['client']:.1f} on the same machine; bound "
                        f"{ms['bare'] / (ms['gateway'] + ms['client']):.3f} where every core is busy")
    return rows


def merge(meta, session, settings, repeat) -> list[str]:
    """The merge alone, new against the frozen pre-rewrite one (``_legacy_merge``), alternating:
    the 2048x1024 6 scales + flip logits; and a single 2048x1024 pass, on the benchmark model's
    logits and on logits made of regions (blurred-photo colours, as a trained model's maps)."""
    from _legacy_merge import legacy_merge_segmentation

    from service.tasks.segmentation.merge import merge_segmentation
    from service.tasks.segmentation.plan import plan_segmentation

    rgb, _ = photo("coffee", 2048, 1024)
    multi = plan_segmentation(rgb.shape[:2], meta, scales=MULTI, flip=True)
    single = plan_segmentation(rgb.shape[:2], meta, scales=[1.0], flip=False)

    def passes(plan):
        return [r["logits"] for r in run_batched(session, materialise(plan.passes(rgb)), settings,
                                                 meta.max_batch_size)]

    model = passes(single)
    n_cls = model[0].shape[0]
    cases = [("6 scales + flip", multi, passes(multi)), ("single pass", single, model)] + [
        (f"single pass, {name} blur {blur:g} logits", single,
         [photo_logits(name, *model[0].shape[1:], n_cls, blur=blur)])
        for name, blur in (("coffee", 1), ("rocket", 3))]
    lines = []
    for label, plan, logits in cases:
        t: dict[str, list[float]] = defaultdict(list)
        out = {}
        for r in range(repeat + 1):
            for key in _alternating(("new", "old"), r):
                fn = merge_segmentation if key == "new" else legacy_merge_segmentation
                t0 = time.perf_counter()
                out[key] = fn(plan, logits).labels
                t[key].append(time.perf_counter() - t0)
        agree = float((out["new"] == out["old"]).mean())
        new, old = _median(t["new"]), _median(t["old"])
        lines.append(f"merge alone, 2048x1024 {label}: new {new * 1000:.1f} ms, old "
                     f"{old * 1000:.1f} ms, ratio new/old {new / old:.2f} "
                     f"(labels agree {agree * 100:.4f}%)")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads (server and bare)")
    ap.add_argument("--requests", type=int, default=24, help="requests of the throughput case")
    ap.add_argument("--skip", default="", help="comma-separated sections to skip")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from service.contract import ModelMetadata
    from service.settings import Settings

    repo = args.repo or Path(tempfile.gettempdir()) / "hrnet_bench_official"
    repo.mkdir(parents=True, exist_ok=True)
    name = args.model or (args.repo and first_model(repo, "segmentation")) or _export(repo, args.threads)
    meta = ModelMetadata.from_json((repo / name / "hrnet.json").read_text())
    server = dict(repository=repo, ort_intra_threads=args.threads, ort_inter_threads=1,
                  max_network_pixels=1 << 40, request_timeout_s=3600)
    settings = Settings(**server)
    session = bare_session(repo / name / "1" / "model.onnx", settings)
    print(f"model {name} ({meta.arch}, base {meta.segmentation.base_size}, crop "
          f"{tuple(meta.segmentation.crop_size)}), ORT threads {args.threads}, median of "
          f"{args.repeat} (+1 warm-up); {idle_cpu_note()}")
    lines: list[str] = []
    with gateway(server) as url, httpx.Client(timeout=3600) as client:
        if "latency" not in skip:
            lines += latency(client, url, meta, name, session, settings, args.repeat)
        if "formats" not in skip:
            lines += formats(client, url, name, args.repeat)
        if "throughput" not in skip:
            lines += throughput(client, url, meta, name, session, settings, args.requests)
    if "early" not in skip:
        lines += early(meta, name, session, settings, server, args.repeat)
    if "heap" not in skip:
        lines += heap(meta, name, session, settings, server, args.repeat, args.requests)
    if "memory" not in skip:
        lines += memory(repo, name, server, args.threads)
    if "merge" not in skip:
        lines += merge(meta, session, settings, args.repeat)
    print("\n".join(lines))
    print(idle_cpu_note())


if __name__ == "__main__":
    main()
