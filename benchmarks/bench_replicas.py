"""Gateway replicas behind nginx in front of one tritonserver: throughput per replica, latency,
CPU per request, and (``--kill``) a replica SIGKILLed under load. Loopback only.

    .venv/bin/python benchmarks/bench_replicas.py --duration 15         # ~2.5 minutes
    .venv/bin/python benchmarks/bench_replicas.py --replicas 2 --threads 12 --duration 30 --kill
    .venv/bin/python benchmarks/bench_replicas.py --case cityscapes     # CPU per 2048x1024 request

The same harness as tests/deploy/test_replicas.py (tests/deploy/replicas.py): real
``python -m service`` processes (Triton backend, gRPC), nginx running deploy/nginx/hrnet.conf, the
CPU tritonserver of scripts/install_triton.sh serving the CPU twin of a random-init model, and a
thread pool of keep-alive clients.

Cases (each exports its model once into ``$TMPDIR/hrnet_bench_replicas_repo``):

* ``small`` (default): hrnetv2_w18_small_v1 with the LIP protocol (a 96x96 square pass), a
  120x90 PNG: the gateway's per-request overhead dominates, so this measures what one replica
  can push; phases: 1 replica behind nginx at 1, 2, 4, 8 client threads (``--sweep``: throughput,
  CPU use and the autoscaler's load as the replica saturates), ``--replicas`` behind nginx, and
  with ``--kill`` the same again with one replica SIGKILLed a third of the way in;
* ``cityscapes``: the Cityscapes protocol at full size (base 2048: one 2048x1024 pass, 19 classes),
  a 2048x1024 PNG: the gateway's CPU time per production-size request (decode, logits transfer,
  the official upsample + argmax at full resolution, PNG encode). The network is a small random-init
  one on Triton's CPU: its time here says nothing about a GPU (docs/scaling.md).

Printed per phase: requests, status mix, failures, p50/p99, requests/s in all and per replica
(from nginx's access log), the gateways' and Triton's CPU milliseconds per request (from /proc:
user + system time of each process, Triton with its python-backend stubs), each replica's CPU
use (CPU seconds per second) and its average load (the rate of hrnet_inference_load_seconds_total
over the phase: what the KEDA rule reads). Caps: ``--duration``
<= 120 s, ``--max-requests`` <= 50000, ``--threads`` <= 64, ``--replicas`` <= 8.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT  # noqa: E402,F401  (puts the repository root on sys.path)

from tests.deploy.replicas import Nginx, Request, run_load, served_counts, summarize  # noqa: E402
from tests.helpers import (  # noqa: E402
    GatewayProcess, free_port, photo_png, proc_stat, process_cpu_seconds,
)
from tests.triton.harness import TritonServer, install_triton  # noqa: E402

CASES = {
    # name: (model name, dataset, base size, crop (h, w), image (w, h), default threads, default max)
    "small": ("bench_lip", "lip", 96, (96, 96), (120, 90), 8, 20000),
    "cityscapes": ("bench_cityscapes_full", "cityscapes", 2048, (1024, 2048), (2048, 1024), 2, 40),
}


def export(repo: Path, case: str) -> str:
    name, dataset, base, crop, _, _, _ = CASES[case]
    if (repo / name / "1" / "model.onnx").is_file():
        return name
    import torch

    from model_export.exporters import SegmentationExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions

    torch.set_num_threads(2)
    print(f"exporting random-init {name} into {repo} ...", flush=True)
    export_model(ExportRequest(
        task="segmentation", arch="hrnetv2_w18_small_v1", dataset=dataset, name=name, repo=repo,
        random_init=True,
        options=SegmentationExport(base_size=base, crop_size=crop, max_batch_size=4,
                                   parity_sizes=[(64, 128)], parity_batches=(1,)),
        triton=TritonOptions(instance_kind="cpu", warmup="none"),
    ), log=lambda _m: None)
    return name


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid``."""
    total = 0.0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(proc_stat(int(pid))[2]) == pgid:
                total += process_cpu_seconds(int(pid))
        except OSError:  # the process has exited
            continue
    return total


def load_integral(g: GatewayProcess) -> float:
    """hrnet_inference_load_seconds_total of a replica (its rate is the average runner load)."""
    mo = re.search(r"^hrnet_inference_load_seconds_total (\S+)$", g.metrics_text(), re.M)
    return float(mo.group(1)) if mo else float("nan")


def phase(label: str, triton: TritonServer, replicas: list[GatewayProcess], work: Path, req: Request,
          args: argparse.Namespace, kill: bool, threads: int | None = None) -> dict:
    nginx = Nginx(work / f"nginx-{label.replace(' ', '-')}", free_port(), [g.address for g in replicas]).start()
    try:
        time.sleep(0.3)
        logged = len(nginx.log_entries())
        cpu0 = {g.address: g.cpu_seconds() for g in replicas}
        load0 = {g.address: load_integral(g) for g in replicas}
        triton0 = group_cpu_seconds(triton.proc.pid)
        killed: dict[str, float] = {}

        def schedule(t0: float) -> None:
            if not kill:
                return

            def fire() -> None:
                time.sleep(max(0.0, t0 + args.duration / 3 - time.perf_counter()))
                killed["cpu"] = replicas[0].cpu_seconds()
                killed["t"] = time.perf_counter() - t0
                replicas[0].kill()

            threading.Thread(target=fire, daemon=True).start()

        outcomes = run_load(nginx.url, req, threads=threads or args.threads, duration_s=args.duration,
                            max_requests=args.max_requests, timeout_s=300, on_start=schedule)
        elapsed = max(o.start + o.seconds for o in outcomes)
        cpu1 = {g.address: (killed["cpu"] if kill and g is replicas[0] else g.cpu_seconds())
                for g in replicas}
        triton_cpu = group_cpu_seconds(triton.proc.pid) - triton0
        load1 = {g.address: load_integral(g) for g in replicas if g.proc.poll() is None}
    finally:
        nginx.stop()
    served = served_counts(nginx.log_entries()[logged:])
    summary = summarize(outcomes, elapsed)
    ok = sum(o.ok for o in outcomes)
    result = {
        "phase": label, "client_threads": threads or args.threads, **summary,
        "seconds": round(elapsed, 1),
        "per_replica": {g.address: {
            "served": served[g.address],
            "requests_per_s": round(served[g.address] / elapsed, 1),
            "gateway_cpu_ms_per_request": round(1000 * (cpu1[g.address] - cpu0[g.address])
                                                / max(1, served[g.address]), 1),
            # CPU seconds per second: 1.0 = one core busy all the time.
            "gateway_cpu_utilisation": round((cpu1[g.address] - cpu0[g.address]) / elapsed, 2),
            # The autoscaler's signal over the phase: rate() of the load integral.
            "average_load": (round((load1[g.address] - load0[g.address]) / elapsed, 3)
                             if g.address in load1 else None),
        } for g in replicas},
        "triton_cpu_ms_per_request": round(1000 * triton_cpu / max(1, ok), 1),
        "retried_by_nginx": sum(e.retried for e in nginx.log_entries()[logged:]),
    }
    if kill:
        result["killed_at_s"] = round(killed.get("t", float("nan")), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), default="small")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--threads", type=int, help="client threads (default: 8 small, 2 cityscapes)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--max-requests", type=int, help="per phase (default 20000 small, 40 cityscapes)")
    parser.add_argument("--max-concurrency", type=int, default=4, help="HRNET_MAX_CONCURRENCY per replica")
    parser.add_argument("--sweep", type=lambda v: [int(x) for x in v.split(",")],
                        help="client threads of the 1-replica phases (default: 1,2,4,8 small; 2 cityscapes)")
    parser.add_argument("--kill", action="store_true",
                        help="a last phase in which one replica is SIGKILLed a third of the way in")
    parser.add_argument("--repo", type=Path, default=Path(tempfile.gettempdir()) / "hrnet_bench_replicas_repo")
    args = parser.parse_args()
    _, _, _, _, size, threads, max_requests = CASES[args.case]
    args.threads = min(64, args.threads or threads)
    args.max_requests = min(50000, args.max_requests or max_requests)
    args.duration = min(120.0, args.duration)
    args.replicas = max(1, min(8, args.replicas))
    args.sweep = [min(64, t) for t in (args.sweep or ([1, 2, 4, 8] if args.case == "small" else [2]))]

    args.repo.mkdir(parents=True, exist_ok=True)
    model = export(args.repo, args.case)
    install = install_triton()
    work = Path(tempfile.mkdtemp(prefix="hrnet_bench_replicas_"))
    from model_export.triton_cpu import write_cpu_variant

    write_cpu_variant(args.repo / model, work / "triton_repo", install.pydeps)
    triton = TritonServer(install, work / "triton_repo", work / "triton.log").start().wait_ready()
    settings = dict(backend="triton", triton_url=triton.grpc_url, triton_protocol="grpc",
                    max_concurrency=args.max_concurrency, max_queue=64, cpu_threads=1,
                    log_level="warning", triton_startup_wait_s=30, request_timeout_s=300)
    replicas = [GatewayProcess(settings, work / f"gateway{i}.log") for i in range(args.replicas)]
    req = Request("POST", f"/segment?model={model}", photo_png(size), {"Content-Type": "image/png"})
    results = []
    try:
        for g in replicas:
            g.start()
        for g in replicas:
            g.wait_ready()
        for g in replicas:  # warm-up, directly
            for _ in range(2):
                run_load(g.url, req, threads=1, duration_s=60, max_requests=1, timeout_s=300)
        print(f"case {args.case}: {model}, {size[0]}x{size[1]} PNG ({len(req.body)} bytes), "
              f"{args.threads} client threads, {args.duration:g} s per phase, CPUs {os.cpu_count()}",
              flush=True)
        phases = [(f"1 replica, {t} client threads", replicas[:1], False, t) for t in args.sweep]
        if args.replicas > 1:
            phases.append((f"{args.replicas} replicas", replicas, False, None))
        if args.kill and args.replicas > 1:
            phases.append((f"{args.replicas} replicas, one killed", replicas, True, None))
        for label, group, kill, threads in phases:
            result = phase(label, triton, group, work, req, args, kill, threads)
            results.append(result)
            print(json.dumps(result, indent=1), flush=True)
    finally:
        for g in replicas:
            g.stop()
        triton.stop()
    print("\nphase | threads | req/s | p50 ms | p99 ms | failures | gateway CPU ms/req | "
          "CPU use | average load")
    for r in results:
        for addr, rep in r["per_replica"].items():
            print(f"{r['phase']} [{addr}] | {r['client_threads']} | {rep['requests_per_s']} | "
                  f"{r['p50_ms']} | {r['p99_ms']} | {r['failures']} | "
                  f"{rep['gateway_cpu_ms_per_request']} | {rep['gateway_cpu_utilisation']} | "
                  f"{rep['average_load']}")


if __name__ == "__main__":
    main()
