"""Gateway replicas behind nginx, as deploy/nginx/hrnet.conf runs them: the harness of
tests/deploy/test_replicas.py and benchmarks/bench_replicas.py.

* :func:`site_config`: deploy/nginx/hrnet.conf with only its ``listen`` port and its upstream
  ``server`` lines changed (asserted), everything else byte for byte;
* :class:`Nginx`: a real nginx (Debian's package, scripts/install_nginx.sh) as an ordinary child
  process with its own prefix (pid, logs, temp files) and a minimal main config that includes the
  site; its access log records the upstream that served each request (``hrnet_upstream``);
* :func:`run_load`: a thread pool of keep-alive HTTP clients sending one request over and over for
  a bounded time (and count), recording status, error and latency of every request;
* :func:`summarize`: status mix, failures, p50/p99 and requests/s.
"""

from __future__ import annotations

import http.client
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "deploy" / "nginx" / "hrnet.conf"

_LISTEN = re.compile(r"^(\s*)listen\s+\S+;\s*$", re.M)
_SERVER = re.compile(r"^(\s*)server\s+(\d+\.\d+\.\d+\.\d+:\d+|\S+:\d+)(\s[^;]*)?;\s*$", re.M)


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    assert found, "nginx is not installed: bash scripts/install_nginx.sh (Debian's nginx package)"
    return found


def site_config(listen: int, upstreams: list[str]) -> str:
    """The shipped site with ``listen 127.0.0.1:<listen>`` and one ``server`` line per upstream
    (each with the shipped line's parameters); nothing else differs."""
    text = SITE.read_text()
    listens = _LISTEN.findall(text)
    servers = list(_SERVER.finditer(text))
    assert len(listens) == 1 and servers, "deploy/nginx/hrnet.conf: one listen and some server lines"
    indent, params = servers[0].group(1), servers[0].group(3) or ""
    lines = "\n".join(f"{indent}server {u}{params};" for u in upstreams)
    start, end = servers[0].start(), servers[-1].end()
    between = text[start:end]
    assert len(_SERVER.findall(between)) == len(servers) and between.count(";") == len(servers), \
        "the server lines must be consecutive"
    text = text[:start] + lines + text[end:]
    return _LISTEN.sub(lambda mo: f"{mo.group(1)}listen 127.0.0.1:{listen};", text)


class Nginx:
    """nginx in the foreground (``daemon off``) under ``prefix``, serving :func:`site_config`."""

    def __init__(self, prefix: Path, listen: int, upstreams: list[str], workers: int = 1) -> None:
        self.prefix = prefix
        self.port = listen
        self.access_log = prefix / "access.log"
        self.error_log = prefix / "error.log"
        (prefix / "conf").mkdir(parents=True, exist_ok=True)
        (prefix / "temp").mkdir(exist_ok=True)
        (prefix / "conf" / "hrnet.conf").write_text(site_config(listen, upstreams))
        user = pwd.getpwuid(os.geteuid()).pw_name
        temp = prefix / "temp"
        (prefix / "conf" / "nginx.conf").write_text(f"""\
# Test main config: an ordinary process, its files under {prefix}.
{"user " + user + ";" if os.geteuid() == 0 else ""}
worker_processes {workers};
pid "{prefix}/nginx.pid";
error_log "{self.error_log}" warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path "{temp}/body";
    proxy_temp_path "{temp}/proxy";
    fastcgi_temp_path "{temp}/fastcgi";
    uwsgi_temp_path "{temp}/uwsgi";
    scgi_temp_path "{temp}/scgi";
    include hrnet.conf;
    access_log "{self.access_log}" hrnet_upstream;
}}
""")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, *extra: str) -> list[str]:
        return [nginx_binary(), "-p", str(self.prefix), "-c", str(self.prefix / "conf" / "nginx.conf"),
                "-e", str(self.error_log), *extra]

    def test_config(self) -> str:
        """``nginx -t``: the output (raises when the config is invalid)."""
        proc = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    def start(self, timeout: float = 20.0) -> "Nginx":
        self.test_config()
        self.proc = subprocess.Popen(self.command("-g", "daemon off;"), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.error_log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("nginx did not answer")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGQUIT)  # graceful: finish the requests in flight
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def log_entries(self) -> list["AccessEntry"]:
        return [e for e in map(AccessEntry.parse, self.access_log.read_text().splitlines()) if e]


@dataclass(frozen=True)
class AccessEntry:
    """One line of the ``hrnet_upstream`` access log."""

    request: str
    status: int
    upstreams: tuple[str, ...]         # every replica tried, in order
    upstream_statuses: tuple[str, ...]
    time: float                        # when the answer was logged (Unix seconds, ms resolution)

    _RE = re.compile(r'"(?P<req>[^"]*)" (?P<status>\d{3}) \d+ rt=\S+ upstream=(?P<up>.*?) '
                     r'ustatus=(?P<us>.*?) urt=.*? t=(?P<t>[\d.]+) ')

    @classmethod
    def parse(cls, line: str) -> "AccessEntry | None":
        mo = cls._RE.search(line)
        if not mo:
            return None
        # Several tries are listed "a, b"; internal redirects "a : b".
        split = lambda s: tuple(x for x in re.split(r",\s*|\s+:\s+", s.strip()) if x)  # noqa: E731
        return cls(mo.group("req"), int(mo.group("status")), split(mo.group("up")),
                   split(mo.group("us")), float(mo.group("t")))

    @property
    def served_by(self) -> str:
        """The replica whose answer the client got (the last one tried)."""
        return self.upstreams[-1]

    @property
    def retried(self) -> bool:
        return len(self.upstreams) > 1


@dataclass
class Outcome:
    start: float               # seconds since the load began
    seconds: float
    status: int | None         # None: no HTTP answer (connection error)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Request:
    method: str
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def run_load(url: str, request: Request, *, threads: int, duration_s: float, max_requests: int,
             timeout_s: float = 30.0, on_start: Callable[[float], None] | None = None) -> list[Outcome]:
    """``threads`` clients (one keep-alive connection each, reopened after an error) send
    ``request`` until ``duration_s`` passed or ``max_requests`` were sent; every outcome, in order
    of start. ``on_start(t0)`` runs once just before the first request (to schedule events)."""
    host, port = url.removeprefix("http://").split(":")
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    sent = [0]
    t0 = time.perf_counter()
    stop_at = t0 + duration_s

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            with lock:
                if sent[0] >= max_requests or time.perf_counter() >= stop_at:
                    break
                sent[0] += 1
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
            start = time.perf_counter()
            try:
                conn.request(request.method, request.path, body=request.body, headers=request.headers)
                resp = conn.getresponse()
                resp.read()
                outcome = Outcome(start - t0, time.perf_counter() - start, resp.status)
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                outcome = Outcome(start - t0, time.perf_counter() - start, None, f"{type(e).__name__}: {e}")
                conn.close()
                conn = None
            with lock:
                outcomes.append(outcome)
        if conn is not None:
            conn.close()

    if on_start is not None:
        on_start(t0)
    workers = [threading.Thread(target=client, name=f"load-{i}", daemon=True) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=duration_s + timeout_s + 30)
    return sorted(outcomes, key=lambda o: o.start)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(round(q / 100 * len(ordered) + 0.5))))
    return ordered[rank - 1]


def summarize(outcomes: list[Outcome], seconds: float) -> dict:
    ok = [o.seconds for o in outcomes if o.ok]
    statuses = Counter(str(o.status) if o.status is not None else "error" for o in outcomes)
    return {
        "requests": len(outcomes),
        "statuses": dict(sorted(statuses.items())),
        "failures": sum(not o.ok for o in outcomes),
        "errors": sorted({o.error for o in outcomes if o.error})[:5],
        "p50_ms": round(1000 * percentile(ok, 50), 1),
        "p99_ms": round(1000 * percentile(ok, 99), 1),
        "requests_per_s": round(len(ok) / seconds, 1) if seconds > 0 else 0.0,
    }


def served_counts(entries: list[AccessEntry], path_prefix: str = "POST ") -> Counter:
    """Requests (of ``path_prefix``) per replica that answered them, from the access log."""
    return Counter(e.served_by for e in entries if e.request.startswith(path_prefix))
