"""Bounded load + soak of a gateway on this machine: requests, status mix, latency percentiles,
and the gateway's resident memory and thread count at the start (after warm-up), middle and end.

    .venv/bin/python -m model_export demo --repo /tmp/demo_repo          # once
    .venv/bin/python benchmarks/bench_load.py --repo /tmp/demo_repo --concurrency 16 --duration 600

Without ``--url`` it starts ``python -m service`` over ``--repo`` as its own process (so its
/proc/<pid>/status is the gateway's alone); with ``--url`` it loads a running gateway, whose
``--pid`` gives the memory figures. Bounded by construction: concurrency at most 64, duration at
most 1800 s, at most 1,000,000 requests, loopback addresses only (127.0.0.0/8, ::1, localhost).

Each client thread cycles through the endpoints the repository serves (/segment, /landmarks,
/detect) with small photos in the three request forms. It prints one summary; ``--json`` also
writes it to a file. Errors are any status other than 200 (429 counts separately: the queue
bound at work, not a failure) and transport failures.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from benchmarks._common import first_model, gateway, photo  # noqa: E402

MAX_CONCURRENCY = 64
MAX_DURATION_S = 1800.0
MAX_REQUESTS = 1_000_000


def loopback_only(url: str) -> str:
    """``url`` if its host is a loopback address; else SystemExit (this script loads only local servers)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return url
    try:
        if ipaddress.ip_address(host).is_loopback:
            return url
    except ValueError:
        pass
    raise SystemExit(f"refusing to load {host!r}: loopback addresses only")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS (KiB) and Threads of process ``pid`` from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


class Workload:
    """The requests the clients cycle through: every served task in every request form."""

    def __init__(self, models: dict[str, str]) -> None:
        _, png = photo("coffee", 320, 240)
        _, jpg = photo("astronaut", 256, 256, "JPEG")
        self.requests: list[tuple[str, dict]] = []
        if "segmentation" in models:
            self.requests += [
                ("/segment", dict(files={"file": ("a.png", png, "image/png")},
                                  headers={"accept": "image/png"})),
                ("/segment", dict(json={"image": base64.b64encode(png).decode()})),
            ]
        if "landmarks" in models:
            self.requests += [
                ("/landmarks", dict(content=jpg, headers={"content-type": "image/jpeg"})),
                ("/landmarks", dict(files={"file": ("a.jpg", jpg, "image/jpeg")},
                                    data={"faces": "[[60, 20, 200, 180]]"})),
            ]
        if "detection" in models:
            self.requests += [("/detect", dict(files={"file": ("a.png", png, "image/png")}))]
        if not self.requests:
            raise SystemExit("the repository serves no model")


class Load:
    """``concurrency`` client threads; each records (endpoint, status, seconds) per request."""

    def __init__(self, url: str, workload: Workload, concurrency: int, duration_s: float,
                 max_requests: int, timeout_s: float, headers: dict[str, str]) -> None:
        self.url, self.workload = url, workload
        self.concurrency, self.duration_s, self.max_requests = concurrency, duration_s, max_requests
        self.timeout_s, self.headers = timeout_s, headers
        self.results: list[tuple[str, int, float]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.started = 0.0

    def _client(self, index: int) -> None:
        i = index
        with httpx.Client(base_url=self.url, timeout=self.timeout_s, headers=self.headers) as client:
            while not self.stop.is_set():
                with self.lock:
                    if len(self.results) >= self.max_requests:
                        self.stop.set()
                        return
                path, kwargs = self.workload.requests[i % len(self.workload.requests)]
                i += 1
                t0 = time.perf_counter()
                try:
                    status = client.post(path, **kwargs).status_code
                except httpx.HTTPError:
                    status = -1  # transport failure (counted as an error)
                with self.lock:
                    self.results.append((path, status, time.perf_counter() - t0))
                if time.monotonic() - self.started > self.duration_s:
                    self.stop.set()

    def run(self, on_progress) -> None:  # type: ignore[no-untyped-def]
        self.started = time.monotonic()
        threads = [threading.Thread(target=self._client, args=(k,), daemon=True)
                   for k in range(self.concurrency)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            on_progress(time.monotonic() - self.started)
            time.sleep(1.0)
            if time.monotonic() - self.started > self.duration_s + self.timeout_s + 30:
                self.stop.set()
                break
        for t in threads:
            t.join(timeout=self.timeout_s + 5)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q / 100 * (len(values) - 1)))))
    return values[k]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running gateway (loopback only); default: start one over --repo")
    ap.add_argument("--pid", type=int, help="the running gateway's process id (with --url)")
    ap.add_argument("--repo", type=Path, default=ROOT / "triton_repo", help="model repository")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load after warm-up")
    ap.add_argument("--max-requests", type=int, default=200_000)
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of load before 'start'")
    ap.add_argument("--timeout", type=float, default=120.0, help="client timeout per request")
    ap.add_argument("--api-key", help="sent as X-API-Key")
    ap.add_argument("--gateway-setting", action="append", default=[], metavar="FIELD=VALUE",
                    help="HRNET_* setting of the started gateway (repeatable)")
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args(argv)
    concurrency = max(1, min(args.concurrency, MAX_CONCURRENCY))
    duration = max(1.0, min(args.duration, MAX_DURATION_S))
    max_requests = max(1, min(args.max_requests, MAX_REQUESTS))
    warmup = max(0.0, min(args.warmup, 300.0))
    headers = {"x-api-key": args.api_key} if args.api_key else {}

    models = {t: m for t in ("segmentation", "landmarks", "detection")
              if (m := first_model(args.repo, t)) is not None}
    workload = Workload(models)

    with ExitStack() as stack:
        if args.url:
            url, pid = loopback_only(args.url), args.pid
        else:
            settings = {"repository": str(args.repo),
                        **dict(s.split("=", 1) for s in args.gateway_setting)}
            started = stack.enter_context(gateway(settings, startup_timeout=180.0))
            url, pid = str(started), started.pid
        print(f"load: {url}, {concurrency} clients, {warmup:g} s warm-up + {duration:g} s, "
              f"at most {max_requests} requests; endpoints: "
              f"{sorted({p for p, _ in workload.requests})}; gateway pid {pid}", flush=True)
        if warmup:
            Load(url, workload, concurrency, warmup, max_requests, args.timeout, headers).run(lambda _: None)
        samples: dict[str, dict[str, int]] = {}
        if pid:
            samples["start"] = proc_status(pid)
        load = Load(url, workload, concurrency, duration, max_requests, args.timeout, headers)

        def progress(elapsed: float) -> None:
            if pid and "middle" not in samples and elapsed >= duration / 2:
                samples["middle"] = proc_status(pid)

        load.run(progress)
        elapsed = time.monotonic() - load.started
        if pid:
            samples["end"] = proc_status(pid)
            samples.setdefault("middle", samples["end"])
            time.sleep(min(10.0, duration / 10))  # idle: what the gateway keeps after the load
            samples["idle"] = proc_status(pid)

    statuses = Counter(s for _, s, _ in load.results)
    ok = [t for _, s, t in load.results if s == 200]
    summary = {
        "requests": len(load.results), "seconds": round(elapsed, 1),
        "requests_per_s": round(len(load.results) / elapsed, 2) if elapsed else 0,
        "status": {str(k): v for k, v in sorted(statuses.items())},
        "errors": sum(v for k, v in statuses.items() if k not in (200, 429)),
        "latency_ms": {f"p{q}": round(1000 * percentile(ok, q), 1) for q in (50, 95, 99)},
        "per_endpoint_p50_ms": {
            p: round(1000 * statistics.median([t for e, s, t in load.results if e == p and s == 200] or [float("nan")]), 1)
            for p in sorted({e for e, _, _ in load.results})},
        "gateway": {k: {"rss_mib": round(v["VmRSS"] / 1024, 1), "threads": v["Threads"]}
                    for k, v in samples.items()},
        # start: after the warm-up; middle/end: under load; idle: a few seconds after it.
    }
    if "start" in samples:
        start, end = samples["start"]["VmRSS"], samples["end"]["VmRSS"]
        summary["rss_growth_pct"] = round(100.0 * (end - start) / start, 1)
        summary["rss_idle_growth_pct"] = round(
            100.0 * (samples["idle"]["VmRSS"] - start) / start, 1)
        summary["gateway_peak_rss_mib"] = round(samples["end"].get("VmHWM", 0) / 1024, 1)
    try:
        summary["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
