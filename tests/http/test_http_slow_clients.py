"""Slow and malformed clients over real sockets, against the production server configuration
(:func:`service.http.server.server_config`, served by :func:`tests.helpers.serve`).

Short configured limits keep every case to about a second: header timeout 1 s, body timeout 1 s
plus 1 s per 200 bytes, 40 connections, 8 KiB of headers, 30 header fields. Each case is timed,
answered (where the server can still answer) in the JSON error shape, and followed by a check
that the server still serves.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from tests.helpers import (
    FakeDetector, flat_png, host_port, http_json, http_status, raw_exchange, read_until_closed, serve,
)

HEADER_S = 1.0
BODY_S = 1.0
MIN_RATE = 200
MAX_CONNECTIONS = 40
SLOW = dict(http_header_timeout_s=HEADER_S, http_body_timeout_s=BODY_S,
            http_body_min_rate=MIN_RATE, http_max_connections=MAX_CONNECTIONS,
            http_max_header_bytes=8192, http_max_headers=30, http_keepalive_timeout_s=2.0)
PNG = flat_png(40, 30)


@pytest.fixture(scope="module")
def slow_url(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(repository=Path(tmp_path_factory.mktemp("none")), **SLOW)
    with serve(create_app(settings, backend=FakeDetector())) as url:
        yield url


def _still_serving(url: str) -> None:
    r = httpx.get(f"{url}/healthz", timeout=5)
    assert r.status_code == 200, r.text


def _json_error(response: bytes, status: int, code: str) -> dict:
    assert http_status(response) == status, response[:300]
    assert b"content-type: application/json" in response.lower()
    err = http_json(response)["error"]
    assert err["code"] == code and err["message"], err
    return err


def _trickle(url: str, data: bytes, interval: float, limit_s: float) -> tuple[float, bytes, bool]:
    """Send ``data`` one byte every ``interval`` seconds until the server answers or closes:
    ``(seconds, what it sent, closed)``."""
    t0 = time.monotonic()
    with socket.create_connection(host_port(url), timeout=limit_s) as sock:
        for i in range(len(data)):
            if time.monotonic() - t0 > limit_s:
                break
            try:
                sock.sendall(data[i:i + 1])
            except OSError:  # closed under us: what it said is in the receive buffer
                break
            sock.settimeout(interval)
            try:
                first = sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return time.monotonic() - t0, b"", True
            rest, _ = read_until_closed(sock, 2.0) if first else (b"", True)
            return time.monotonic() - t0, first + rest, True
        rest, closed = read_until_closed(sock, limit_s)
        return time.monotonic() - t0, rest, closed


def test_one_header_byte_per_fifth_of_a_second_is_cut_off(slow_url: str) -> None:
    head = b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n" + b"X-Slow: y\r\n" * 20
    seconds, response, closed = _trickle(slow_url, head, 0.2, limit_s=10)
    assert closed and HEADER_S * 0.9 < seconds < HEADER_S + 1.5, seconds
    err = _json_error(response, 408, "request_timeout")
    assert "headers" in err["message"]
    _still_serving(slow_url)


def test_a_silent_connection_is_closed_after_the_header_timeout(slow_url: str) -> None:
    seconds, response, closed = raw_exchange(slow_url, b"", timeout=10)
    assert closed and seconds < HEADER_S + 1.5, seconds
    _json_error(response, 408, "request_timeout")


def test_a_ten_bytes_per_second_body_is_cut_off(slow_url: str) -> None:
    head = (b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(PNG))
    t0 = time.monotonic()
    with socket.create_connection(host_port(slow_url), timeout=10) as sock:
        sock.sendall(head)
        response, closed = b"", False
        for i in range(len(PNG)):
            try:
                sock.sendall(PNG[i:i + 1])
            except OSError:
                break
            sock.settimeout(0.1)
            try:
                response = sock.recv(65536)
            except socket.timeout:
                continue
            rest, closed = read_until_closed(sock, 3)
            response += rest
            break
    seconds = time.monotonic() - t0
    # 1 s + 1 s per 200 bytes: about 1.06 s for ~10 bytes/0.1 s
    assert BODY_S * 0.9 < seconds < BODY_S + 2, seconds
    err = _json_error(response, 408, "request_timeout")
    assert "body" in err["message"]
    _still_serving(slow_url)


def test_a_body_shorter_than_its_content_length_is_cut_off(slow_url: str) -> None:
    request = (b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
               b"Content-Length: 1000\r\n\r\n0123456789")
    seconds, response, closed = raw_exchange(slow_url, request, timeout=10)
    assert closed and BODY_S * 0.9 < seconds < BODY_S + 1.5, seconds
    _json_error(response, 408, "request_timeout")


def test_a_large_body_at_a_fair_rate_is_not_cut_off(slow_url: str) -> None:
    """20 KB over ~1.5 s (well above 200 B/s): past the bare 1 s body timeout, yet served."""
    body = flat_png(200, 150) + b"\0" * 20_000  # a valid image (trailing bytes are ignored)
    request = (b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
    with socket.create_connection(host_port(slow_url), timeout=10) as sock:
        sock.sendall(request)
        pieces = [body[i:i + max(1, len(body) // 15)] for i in range(0, len(body), max(1, len(body) // 15))]
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(1.5 / len(pieces))
        response, closed = read_until_closed(sock, 10)
    assert http_status(response) == 200, response[:300]


def test_half_open_connections_are_bounded_and_expire(slow_url: str) -> None:
    """2 x the connection bound of half-sent heads: the excess is answered 503 at once, the rest
    408 after the header timeout; the server serves throughout and afterwards."""
    socks = []
    try:
        for _ in range(2 * MAX_CONNECTIONS):
            s = socket.create_connection(host_port(slow_url), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        time.sleep(0.3)
        refused = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                data = s.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
            if http_status(data) == 503:
                assert http_json(data)["error"]["code"] == "too_many_connections"
                refused += 1
        assert refused >= MAX_CONNECTIONS - 2, refused  # a few of the bound go to other tests' sockets
        t0 = time.monotonic()
        states = []
        for s in socks:
            data, closed = read_until_closed(s, HEADER_S + 2 - (time.monotonic() - t0))
            states.append(closed)
        assert all(states), f"{states.count(False)} connections still open after the header timeout"
    finally:
        for s in socks:
            s.close()
    _still_serving(slow_url)


def _head(extra: bytes = b"", target: bytes = b"/detect") -> bytes:
    return b"POST " + target + b" HTTP/1.1\r\nHost: x\r\n" + extra


@pytest.mark.parametrize("name,request_bytes,status,code", [
    ("content_length_abc", _head(b"Content-Type: image/png\r\nContent-Length: abc\r\n\r\n"), 400, "bad_http_request"),
    ("content_length_negative", _head(b"Content-Type: image/png\r\nContent-Length: -5\r\n\r\n"), 400, "bad_http_request"),
    ("conflicting_content_lengths", _head(b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n12345"), 400, "bad_http_request"),
    ("content_length_and_chunked", _head(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), 400, "bad_http_request"),
    ("unknown_transfer_encoding", _head(b"Transfer-Encoding: gzip\r\n\r\n"), 501, "not_implemented"),
    ("bad_chunk_size", _head(b"Content-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"), 400, "bad_http_request"),
    ("oversize_query", b"GET /healthz?" + b"q" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "headers_too_large"),
    ("oversize_header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", 431, "headers_too_large"),
    ("one_mebibyte_header", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n", 431, "headers_too_large"),
    ("too_many_headers", b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(2000)) + b"\r\n", 431, "headers_too_large"),
    ("garbage_request_line", b"HELLO\x00\x1b[31m\r\n\r\n", 400, "bad_http_request"),
    ("header_without_colon", b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400, "bad_http_request"),
    ("control_in_header_value", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "bad_http_request"),
    ("http_0_9_style", b"GET /\r\n\r\n", 400, "bad_http_request"),
    ("missing_host_http11", b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_http_request"),
], ids=lambda v: v if isinstance(v, str) and v.isidentifier() else "")
def test_http_layer_errors_are_json(slow_url: str, name: str, request_bytes: bytes, status: int,
                                    code: str) -> None:
    seconds, response, closed = raw_exchange(slow_url, request_bytes, timeout=5)
    assert closed and seconds < 2.5, (name, seconds)
    err = _json_error(response, status, code)
    assert "\x00" not in err["message"] and "\x1b" not in err["message"]
    _still_serving(slow_url)


def _read_response(sock: socket.socket, timeout: float = 5) -> bytes:
    """One Content-Length framed response from a kept-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def test_the_next_request_on_a_kept_alive_connection_has_a_header_timeout_too(slow_url: str) -> None:
    with socket.create_connection(host_port(slow_url), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert http_status(_read_response(sock)) == 200
        t0 = time.monotonic()
        for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([ch]))
            except OSError:
                break
            time.sleep(0.1)
            if time.monotonic() - t0 > 5:
                break
        response, closed = read_until_closed(sock, 3)
    assert closed and time.monotonic() - t0 < HEADER_S + 2.5
    _json_error(response, 408, "request_timeout")


def test_a_request_answered_before_its_body_ended_leaves_no_idle_connection(slow_url: str) -> None:
    """415 is answered before the body is read; once the body is in, the connection is idle and
    closed after the keep-alive timeout (2 s here), not held forever."""
    body = b"x" * 1000
    with socket.create_connection(host_port(slow_url), timeout=10) as sock:
        sock.sendall(b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body))
        assert http_status(_read_response(sock)) == 415
        sock.sendall(body)
        t0 = time.monotonic()
        rest, closed = read_until_closed(sock, 6)
    assert closed and time.monotonic() - t0 < 2 + 1.5, time.monotonic() - t0


def test_keep_alive_survives_an_invalid_json_body(slow_url: str) -> None:
    """Deep nesting is an ordinary 400 (item 1): the same connection serves the next request."""
    deep = b'{"image":"x","options":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with httpx.Client(base_url=slow_url, timeout=10) as client:
        r1 = client.post("/detect", content=deep, headers={"content-type": "application/json"})
        assert r1.status_code == 400 and r1.json()["error"]["code"] == "invalid_json", r1.text
        stream1 = r1.extensions["network_stream"]
        r2 = client.get("/healthz")
        assert r2.status_code == 200
        assert r2.extensions["network_stream"] is stream1, "the kept-alive connection was dropped"


def test_server_configuration_is_the_production_one(slow_url: str) -> None:
    """tests.helpers.serve and python -m service build their server with server_config."""
    import inspect

    import service.__main__ as main
    from tests import helpers

    assert "server_config(" in inspect.getsource(main.main)
    assert "server_config(" in inspect.getsource(helpers.serve)
    r = httpx.get(f"{slow_url}/healthz", timeout=5)
    assert "server" not in r.headers  # server_header=False: the production setting


def test_concurrent_slow_clients_do_not_delay_others(slow_url: str) -> None:
    """Ten trickling clients at once; a normal request meanwhile is answered at once."""
    stop = threading.Event()

    def trickle() -> None:
        with socket.create_connection(host_port(slow_url), timeout=5) as s:
            for ch in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                if stop.is_set():
                    return
                try:
                    s.sendall(bytes([ch]))
                except OSError:
                    return
                time.sleep(0.1)

    threads = [threading.Thread(target=trickle, daemon=True) for _ in range(10)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        t0 = time.monotonic()
        r = httpx.post(f"{slow_url}/detect", content=PNG, headers={"content-type": "image/png"},
                       timeout=5)
        assert r.status_code == 200 and time.monotonic() - t0 < 1.0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


class _Recording:
    """A transport that records each ``write`` before passing it on."""

    def __init__(self, transport: object, sent: list[bytes]) -> None:
        self._transport, self._sent = transport, sent

    def write(self, data: bytes) -> None:
        self._sent.append(bytes(data))
        self._transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def _sends_to_the_client(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every ``write`` that reaches the server's socket transports (uvloop's, written in C, can
    not be patched themselves: the recorder sits right below the server's own writer)."""
    from service.http import server

    sent: list[bytes] = []
    init = server._TurnWriter.__init__

    def recording(self, transport, loop):  # type: ignore[no-untyped-def]
        init(self, _Recording(transport, sent), loop)

    monkeypatch.setattr(server._TurnWriter, "__init__", recording)
    return sent


@pytest.mark.parametrize("name, request_bytes", [
    ("health", b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ("detect", b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
               b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(PNG) + PNG),
    ("json error", b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Connection: close\r\nContent-Length: 5\r\n\r\n{nope"),
])
def test_a_small_answer_leaves_in_one_send(slow_url: str, monkeypatch: pytest.MonkeyPatch,
                                           name: str, request_bytes: bytes) -> None:
    """Head and body of an answer go to the socket in one write: a replica killed between two
    writes would leave nginx a header and no body, past the point where it can retry
    (tests/deploy/test_replicas.py)."""
    sent = _sends_to_the_client(monkeypatch)
    _, received, closed = raw_exchange(slow_url, request_bytes)
    assert closed and http_status(received) in (200, 400, 415, 422), received[:200]
    assert received in sent, [s[:60] for s in sent]


def test_a_large_answer_is_not_copied_to_be_joined(slow_url: str, monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    """Past COALESCE_BYTES the body goes out as the application gave it (no copy of megabytes):
    the head in one write, the body in the next."""
    from service.http.server import COALESCE_BYTES

    sent = _sends_to_the_client(monkeypatch)
    _, received, closed = raw_exchange(slow_url, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n"
                                                 b"Connection: close\r\n\r\n")
    head, _, body = received.partition(b"\r\n\r\n")
    assert closed and http_status(received) == 200
    if len(body) > COALESCE_BYTES:
        assert body in sent and head + b"\r\n\r\n" in sent
    else:  # a schema this small leaves in one piece like any other answer
        assert received in sent
