"""Distinct bad requests over real HTTP: each gets a 4xx JSON error with a useful message, and the
server stays healthy (``/healthz`` 200, a good request still answered) after all of them."""

from __future__ import annotations

import base64
import gc
import io
import struct
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.helpers import blank_png, repo_settings, serve

LIMITS = dict(max_body_bytes=1_000_000, max_pixels=1_000_000, max_image_side=2000, max_faces=3,
              max_network_pixels=1_000_000)


def jpeg(width: int = 64, height: int = 48) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def png_bomb_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


GOOD = jpeg()
GOOD_B64 = base64.b64encode(GOOD).decode()


def multipart(data: bytes, **fields):
    return dict(files={"file": ("x", data, "application/octet-stream")}, data=fields)


# (id, path, request kwargs, expected status, words expected in the message)
CASES = [
    ("empty_body", "/landmarks", dict(content=b"", headers={"content-type": "image/jpeg"}), 400, ["empty"]),
    ("not_an_image", "/landmarks", multipart(b"hello, I am text"), 415, ["not a recognised image"]),
    ("truncated_jpeg", "/landmarks", multipart(GOOD[: len(GOOD) // 2]), 400, ["truncated", "jpeg"]),
    ("gif", "/landmarks", multipart(b"GIF89a\x01\x00\x01\x00\x80\x00\x00;"), 415, ["gif"]),
    ("pdf", "/segment", multipart(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n"), 415, ["pdf"]),
    ("too_many_pixels", "/landmarks", multipart(blank_png(1001, 1000, "L")), 413, ["1001x1000", "1000000"]),
    ("side_too_long", "/landmarks", multipart(blank_png(2001, 10, "L")), 413, ["longest side", "2000"]),
    ("bomb_header", "/landmarks", multipart(png_bomb_header(200_000, 200_000)), 413, ["pixels"]),
    ("body_too_large", "/landmarks", dict(content=b"\xff\xd8" + b"\x00" * 1_100_000, headers={"content-type": "image/jpeg"}), 413, ["limit"]),
    ("bad_base64", "/landmarks", dict(json={"image": "%%%not-base64%%%"}), 400, ["base64"]),
    ("malformed_json", "/landmarks", dict(content=b'{"image": "abc",', headers={"content-type": "application/json"}), 400, ["json"]),
    ("json_without_image", "/landmarks", dict(json={"faces": []}), 400, ["image"]),
    ("multipart_without_file", "/landmarks", dict(files={"faces": (None, "[]")}), 400, ["file"]),
    ("faces_not_json", "/landmarks", multipart(GOOD, faces="[[1,2,3,4"), 400, ["faces", "json"]),
    ("unknown_model", "/landmarks", dict(json={"image": GOOD_B64, "model": "no_such_model"}), 404, ["no_such_model"]),
    ("wrong_task_landmarks", "/landmarks", dict(json={"image": GOOD_B64, "model": "seg_cityscapes"}), 400, ["segmentation model"]),
    ("wrong_task_segment", "/segment", dict(json={"image": GOOD_B64, "model": "face_300w"}), 400, ["landmarks model"]),
    ("negative_scale", "/segment", dict(json={"image": GOOD_B64, "scales": [-0.5]}), 422, ["scale"]),
    ("too_many_scales", "/segment", dict(json={"image": GOOD_B64, "scales": [1.0] * 9}), 422, ["scales"]),
    ("non_numeric_scale", "/segment", dict(json={"image": GOOD_B64, "scales": ["big"]}), 422, ["scales"]),
    ("too_many_faces", "/landmarks", dict(json={"image": GOOD_B64, "faces": [[0, 0, 10, 10]] * 4}), 422, ["too many faces", "3"]),
    ("face_outside", "/landmarks", dict(json={"image": GOOD_B64, "faces": [[500, 500, 600, 600]]}), 422, ["outside", "64x48"]),
    ("degenerate_box", "/landmarks", dict(json={"image": GOOD_B64, "faces": [[10, 10, 10, 30]]}), 422, ["degenerate"]),
    ("short_box", "/landmarks", dict(json={"image": GOOD_B64, "faces": [[1, 2, 3]]}), 422, ["face 0", "4 numbers"]),
    ("non_numeric_box", "/landmarks", dict(json={"image": GOOD_B64, "faces": [["a", 0, 1, 1]]}), 422, ["face 0"]),
    ("negative_face_scale", "/landmarks", dict(json={"image": GOOD_B64, "faces": [{"center": [5, 5], "scale": -1}]}), 422, ["scale"]),
    ("unknown_option", "/landmarks", dict(json={"image": GOOD_B64, "colour": "red"}), 422, ["colour"]),
    ("bad_option_type", "/landmarks", multipart(GOOD, flip="sometimes"), 422, ["flip"]),
    ("accept_png_only", "/landmarks", dict(json={"image": GOOD_B64}, headers={"accept": "image/png"}), 406, ["application/json"]),
    ("text_content_type", "/landmarks", dict(content=b"hello", headers={"content-type": "text/plain"}), 415, ["content-type"]),
    ("too_many_network_pixels", "/segment", dict(json={"image": GOOD_B64, "scales": [4.0], "flip": True}), 422, ["network-input pixels", "1000000"]),
    ("bad_segment_window", "/segment", dict(json={"image": GOOD_B64, "window": "diagonal"}), 422, ["window"]),
]


@pytest.fixture(scope="module")
def small_limits_url(model_repo):
    with serve(repo_settings(model_repo, **LIMITS)) as url:
        yield url


def test_at_least_fifteen_distinct_cases():
    assert len({c[0] for c in CASES}) == len(CASES) >= 15


@pytest.mark.parametrize("name,path,kwargs,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input(small_limits_url, name, path, kwargs, status, words):
    r = httpx.post(f"{small_limits_url}{path}", timeout=60, **kwargs)
    assert r.status_code == status, (name, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] and err["message"]
    for w in words:
        assert w.lower() in err["message"].lower(), (name, err)


def test_still_healthy_after_bad_inputs(small_limits_url):
    for name, path, kwargs, _, _ in CASES:  # the whole barrage again, then a good request
        httpx.post(f"{small_limits_url}{path}", timeout=60, **kwargs)
    assert httpx.get(f"{small_limits_url}/healthz").status_code == 200
    assert httpx.get(f"{small_limits_url}/readyz").status_code == 200
    r = httpx.post(f"{small_limits_url}/landmarks", json={"image": GOOD_B64}, timeout=120)
    assert r.status_code == 200, r.text
    assert len(r.json()["faces"][0]["landmarks"]) == 68


def test_wrong_method_is_json(small_limits_url):
    r = httpx.get(f"{small_limits_url}/landmarks")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def _rss_mib() -> float:
    """Resident memory of this process (the gateway runs in it, on a uvicorn thread)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_bad_inputs_leak_neither_memory_nor_threads(small_limits_url):
    """The whole barrage ten times over one keep-alive connection: memory and thread count level off."""
    with httpx.Client(base_url=small_limits_url, timeout=60) as client:
        def barrage() -> None:
            for _, path, kwargs, status, _ in CASES:
                assert client.post(path, **kwargs).status_code == status

        for _ in range(3):  # warm-up: allocator pools, caches, lazily created threads
            barrage()
        gc.collect()
        rss0, threads0 = _rss_mib(), threading.active_count()
        for _ in range(10):
            barrage()
        gc.collect()
        grown = _rss_mib() - rss0
        assert grown < 40, f"resident memory grew {grown:.1f} MiB over {10 * len(CASES)} bad requests"
        assert threading.active_count() <= threads0 + 2
        assert client.get("/healthz").status_code == 200
