"""Horizontal scale on this machine: two real gateway processes (``python -m service``, Triton
backend) behind a real nginx running deploy/nginx/hrnet.conf, in front of one real tritonserver
(the CPU twin of the session's ``seg_lip`` model). Load from a thread pool for a bounded time; one
replica is SIGKILLed mid-load.

Allowed failures during the kill: **0**. A request nginx sends to the killed replica either fails
to connect (refused: nginx tries the other replica) or was in flight when the process died (the
connection resets before a response header: ``proxy_next_upstream error non_idempotent`` sends it
again, which is safe because inference has no side effects; the body is buffered by nginx so it can
be resent). ``max_fails=1`` then keeps the dead replica out for ``fail_timeout``. The one window
that could still fail a request is a replica dying *after* it has started sending its answer:
the gateway hands each answer of up to 64 KiB to the kernel in one send (head and body together,
``service.http.server``), so an answer is either all in the kernel's buffer or not started. (Before
that, head and body left in two loop turns, and one request of 1,797 once got a header and no
body.)

The figures (status mix, failures during the kill, p50/p99, per-replica counts, CPU per request)
are printed to the terminal.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy import manifests as m
from tests.deploy.replicas import Nginx, Request, run_load, served_counts, summarize
from tests.helpers import GatewayProcess, free_port, photo_png
from tests.triton.harness import LEAN_MODEL, TritonServer, install_triton

THREADS = 6
DURATION_S = 14.0
KILL_AT_S = 5.0
MAX_REQUESTS = 4000
KILL_WINDOW_S = (-1.0, 3.0)  # around the kill: where failures would show


@pytest.fixture(scope="module")
def triton(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """One tritonserver serving the CPU twin of ``seg_lip`` (the cheapest session model)."""
    from model_export.triton_cpu import write_cpu_variant

    install = install_triton()
    repo = tmp_path_factory.mktemp("replicas_triton_repo")
    write_cpu_variant(model_repo / LEAN_MODEL, repo, install.pydeps)
    server = TritonServer(install, repo, tmp_path_factory.mktemp("replicas_logs") / "triton.log")
    server.start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _requests_served(metrics_text: str) -> float:
    """hrnet_requests_total of /segment with status 200, from a replica's /metrics."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "hrnet_requests":
            return sum(s.value for s in family.samples if s.name == "hrnet_requests_total"
                       and s.labels.get("endpoint") == "/segment" and s.labels.get("status") == "200")
    return 0.0


def _post(url: str, req: Request) -> int:
    r = urllib.request.Request(url + req.path, data=req.body, headers=req.headers, method="POST")
    with urllib.request.urlopen(r, timeout=30) as resp:
        resp.read()
        return resp.status


def test_two_replicas_behind_nginx_survive_a_kill(triton: TritonServer, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    settings = dict(backend="triton", triton_url=triton.grpc_url, triton_protocol="grpc",
                    max_concurrency=4, max_queue=32, cpu_threads=1, log_level="warning",
                    triton_startup_wait_s=30)
    replicas = [GatewayProcess(settings, tmp_path / f"gateway{i}.log") for i in range(2)]
    nginx = None
    try:
        for g in replicas:
            g.start()
        for g in replicas:
            g.wait_ready()
        nginx = Nginx(tmp_path / "nginx", free_port(), [g.address for g in replicas]).start()
        req = Request("POST", f"/segment?model={LEAN_MODEL}", photo_png((120, 90)),
                      {"Content-Type": "image/png"})
        for g in replicas:  # warm both up directly (first requests pay one-time costs)
            for _ in range(3):
                assert _post(g.url, req) == 200
        assert _post(nginx.url, req) == 200
        time.sleep(0.3)  # nginx writes a log line just after the answer: let the warm-up's land
        logged_before = len(nginx.log_entries())
        served_before = [_requests_served(g.metrics_text()) for g in replicas]
        cpu_before = [g.cpu_seconds() for g in replicas]
        victim, survivor = replicas
        kill: dict[str, float] = {}

        def schedule(t0: float) -> None:
            def fire() -> None:
                time.sleep(max(0.0, t0 + KILL_AT_S - time.perf_counter()))
                kill["cpu"] = victim.cpu_seconds()
                kill["t"], kill["wall"] = time.perf_counter() - t0, time.time()
                victim.kill()

            threading.Thread(target=fire, daemon=True).start()

        outcomes = run_load(nginx.url, req, threads=THREADS, duration_s=DURATION_S,
                            max_requests=MAX_REQUESTS, on_start=schedule)
        elapsed = max(o.start + o.seconds for o in outcomes)
        cpu_survivor = survivor.cpu_seconds() - cpu_before[1]
        served_by_metrics = _requests_served(survivor.metrics_text()) - served_before[1]
    finally:
        if nginx is not None:
            nginx.stop()  # graceful: every log line written
        for g in replicas:
            g.stop()
    entries = nginx.log_entries()[logged_before:]

    assert "t" in kill and victim.proc.poll() is not None, "the replica was not killed"
    summary = summarize(outcomes, elapsed)
    lo, hi = kill["t"] + KILL_WINDOW_S[0], kill["t"] + KILL_WINDOW_S[1]
    in_window = [o for o in outcomes if lo <= o.start <= hi]
    failed_in_window = [o for o in in_window if not o.ok]
    posts = [e for e in entries if e.request.startswith("POST ")]
    before = served_counts([e for e in posts if e.time < kill["wall"]])
    after = served_counts([e for e in posts if e.time >= kill["wall"] + 1.0])
    total = served_counts(posts)
    retried = [e for e in posts if e.retried]
    figures = {
        **summary,
        "kill_at_s": round(kill["t"], 2),
        "requests_in_kill_window": len(in_window),
        "failures_in_kill_window": len(failed_in_window),
        "served_per_replica": {"killed": total[victim.address], "survivor": total[survivor.address]},
        "served_before_kill": {"killed": before[victim.address], "survivor": before[survivor.address]},
        "served_after_kill+1s": {"killed": after[victim.address], "survivor": after[survivor.address]},
        "retried_by_nginx": len(retried),
        "retry_statuses": dict(Counter(",".join(e.upstream_statuses) for e in retried)),
        "survivor_metrics_count": served_by_metrics,
        "victim_cpu_ms_per_request": round(1000 * (kill["cpu"] - cpu_before[0])
                                           / max(1, before[victim.address]), 1),
        "survivor_cpu_ms_per_request": round(1000 * cpu_survivor / max(1, total[survivor.address]), 1),
    }
    with capsys.disabled():
        print("\n[two replicas behind nginx, one SIGKILLed]", json.dumps(figures, indent=1))

    assert summary["failures"] == 0, (summary, [(o.start, o.status, o.error) for o in outcomes if not o.ok][:10])
    assert len(in_window) > 0
    assert len(posts) == len(outcomes), "every client request is in nginx's access log"
    # Both replicas served before the kill; only the survivor after it.
    assert before[victim.address] >= 5 and before[survivor.address] >= 5, before
    assert after[victim.address] == 0 and after[survivor.address] >= 10, after
    # The survivor's own /metrics count agrees with the access log.
    assert served_by_metrics == total[survivor.address]


def test_triton_exports_the_metrics_the_autoscalers_read(triton: TritonServer) -> None:
    """The nv_* series of the Triton rules (gpu: KEDA ScaledObject; kserve: InferenceService
    autoScaling) exist on a real tritonserver's metrics port, for the served model."""
    with urllib.request.urlopen(f"http://127.0.0.1:{triton.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    exported = m.series(text)
    used = set()
    for overlay in ("gpu", "kserve"):
        for q in m.metric_queries(m.render(m.KUBERNETES / "overlays" / overlay)):
            used |= {n for n in q.metrics if n.startswith("nv_")}
    assert used == {"nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"}
    missing = used - set(exported)
    assert not missing, f"tritonserver does not export {missing}"
    assert all(any(f'model="{LEAN_MODEL}"' in labels for labels in exported[n]) for n in used)
