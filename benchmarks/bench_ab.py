"""Two gateways side by side: this checkout's and another commit's (a git worktree), both up at
once, rounds alternating, a short pause before each request; medians of HTTP time and of the
server's ``postprocess`` stage per case, whether the answers are byte-equal, then requests/s of
4 concurrent clients of the small case, rounds alternating.

    git worktree add /tmp/old <commit>
    .venv/bin/python benchmarks/bench_ab.py --old /tmp/old [--repo DIR --model NAME]
        [--rounds 10] [--multi-rounds 4] [--requests 60]

Without --repo it uses (and if need be exports) bench_segment.py's benchmark model. Both
gateways run with this checkout's Python environment; only their ``service`` differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from _common import ROOT, first_model, gateway, photo, requests_per_s  # noqa: E402
from bench_segment import MULTI, _export  # noqa: E402


def _post(client: httpx.Client, url: str, png: bytes, options: dict) -> tuple[float, dict]:
    t0 = time.perf_counter()
    resp = client.post(f"{url}/segment", files={"file": ("img.png", png, "image/png")},
                       data={"options": json.dumps(options)})
    resp.raise_for_status()
    return time.perf_counter() - t0, resp.json()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the other checkout (a git worktree)")
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10, help="rounds of the single-pass cases")
    ap.add_argument("--multi-rounds", type=int, default=4, help="rounds of the 6 scales + flip cases")
    ap.add_argument("--requests", type=int, default=60, help="requests per throughput round")
    args = ap.parse_args()
    repo = args.repo or Path(tempfile.gettempdir()) / "hrnet_bench_official"
    repo.mkdir(parents=True, exist_ok=True)
    name = args.model or first_model(repo, "segmentation") or _export(repo, args.threads)
    server = dict(repository=repo, ort_intra_threads=args.threads, ort_inter_threads=1,
                  max_network_pixels=1 << 40, request_timeout_s=3600)
    small = photo("coffee", 600, 400)[1]
    large = photo("coffee", 2048, 1024)[1]
    multi = {"model": name, "scales": MULTI, "flip": True}
    cases = [("600x400 at scale 0.25", small, {"model": name, "scales": [0.25]}, args.rounds),
             ("2048x1024 single pass", large, {"model": name}, args.rounds),
             ("600x400 6 scales + flip", small, multi, args.multi_rounds),
             ("2048x1024 6 scales + flip", large, multi, args.multi_rounds)]
    roots = {"new": ROOT, "old": args.old.resolve()}
    print(f"new {roots['new']} against old {roots['old']}, model {name}")
    with ExitStack() as stack:
        urls = {k: stack.enter_context(gateway(server, root=root)) for k, root in roots.items()}
        client = stack.enter_context(httpx.Client(timeout=3600))
        for label, png, options, rounds in cases:
            http: dict[str, list[float]] = {k: [] for k in urls}
            post: dict[str, list[float]] = {k: [] for k in urls}
            answers: dict[str, str] = {}
            for r in range(rounds + 1):  # round 0 warms up
                for k in (("old", "new") if r % 2 else ("new", "old")):
                    time.sleep(0.3)
                    dt, body = _post(client, urls[k], png, options)
                    stages = body.pop("timings_ms", {})
                    answers[k] = json.dumps(body, sort_keys=True)
                    if r:
                        http[k].append(1000 * dt)
                        post[k].append(stages.get("postprocess", float("nan")))
            h = {k: statistics.median(v) for k, v in http.items()}
            p = {k: statistics.median(v) for k, v in post.items()}
            print(f"{label} ({rounds} rounds): HTTP new {h['new']:.1f} vs old {h['old']:.1f} ms "
                  f"({h['new'] / h['old']:.3f}); postprocess new {p['new']:.2f} vs old "
                  f"{p['old']:.2f} ms ({p['new'] / p['old']:.3f}); answers equal "
                  f"{answers['new'] == answers['old']}", flush=True)
        png, options = cases[0][1], cases[0][2]
        for url in urls.values():
            requests_per_s(lambda c: _post(c, url, png, options), 8)  # warm-up
        rps: dict[str, list[float]] = {k: [] for k in urls}
        for r in range(6):
            for k in (("old", "new") if r % 2 else ("new", "old")):
                url = urls[k]
                rps[k].append(requests_per_s(lambda c: _post(c, url, png, options), args.requests))
        m = {k: statistics.median(v) for k, v in rps.items()}
        print(f"4 clients of {cases[0][0]} ({args.requests} requests, 6 rounds): new "
              f"{m['new']:.2f} vs old {m['old']:.2f} req/s ({m['new'] / m['old']:.3f})")

if __name__ == "__main__":
    main()
