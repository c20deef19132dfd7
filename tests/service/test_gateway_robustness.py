"""Gateway robustness: bad option values answer 4xx (not 500), uploads are closed, a same-name
model update is followed, long TTA merges run off the event loop, base64 whitespace handling.

All in-process with fake backends (no export, no network)."""

from __future__ import annotations

import asyncio
import base64
import io
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.errors import BackendError, Timeout, Unavailable, Unprocessable
from service.imaging.decode import decode_base64
from service.contract import ModelMetadata
from service.settings import Settings
from service.tasks import detection
from service.tasks.detection import merge as detection_merge
from service.tasks.detection.plan import class_filter
from service.tasks.detection.schemas import DetectOptions
from tests.helpers import FakeDetector, detector_metadata, flat_png, run_task_directly


def _png(w: int = 40, h: int = 30) -> bytes:
    return flat_png(w, h, 90)


class SwappableDetector(FakeDetector):
    """A FakeDetector whose served metadata a test can replace (a re-export, same name)."""

    async def models(self) -> dict[str, ModelMetadata]:
        return {self.meta.name: self.meta}


@pytest.fixture
def client(tmp_path):
    backend = SwappableDetector()
    app = create_app(Settings(repository=tmp_path), backend=backend)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.backend = backend  # type: ignore[attr-defined]
        yield c


@pytest.mark.parametrize("text", ["²", "¹,person", "①"])
def test_unicode_digit_class_is_422_not_500(client, text):
    # str.isdigit() accepts these but int() refuses them: the request must not crash.
    r = client.post("/detect", files={"file": ("a.png", _png(), "image/png")}, data={"classes": text})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_options"
    with pytest.raises(Unprocessable):
        class_filter(detector_metadata(), [text.split(",")[0]])


def test_unicode_decimal_class_index_still_accepted():
    assert class_filter(detector_metadata(), ["٢"]) == {2}  # Arabic-Indic two = "cat"


def test_multipart_upload_files_are_closed(client, monkeypatch):
    from starlette import datastructures

    uploads: list = []
    init = datastructures.UploadFile.__init__

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        init(self, *args, **kwargs)
        uploads.append(self)

    monkeypatch.setattr(datastructures.UploadFile, "__init__", spy)
    big = np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8)  # > 1 MB: spooled
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "PNG", compress_level=0)
    ok = client.post("/detect", files={"file": ("a.png", buf.getvalue(), "image/png")})
    bad = client.post("/detect", files={"file": ("a.png", b"not an image", "image/png")})
    missing = client.post("/detect", files={"other": ("a.png", _png(), "image/png")})
    assert (ok.status_code, bad.status_code, missing.status_code) == (200, 415, 400)
    assert len(uploads) == 3
    assert all(u.file.closed for u in uploads)


def test_same_name_metadata_change_is_followed(client):
    def random_init() -> bool:
        (info,) = client.get("/v1/models").json()["models"]
        return info["random_init"]

    assert random_init() is True
    meta = client.backend.meta
    client.backend.meta = meta.model_copy(update={
        "weights": meta.weights.model_copy(update={"random_init": False, "origin": "official"})})
    assert random_init() is False
    r = client.post("/detect", files={"file": ("a.png", _png(), "image/png")})
    assert r.status_code == 200 and r.headers["x-random-init"] == "false"


class _EchoRunner:
    async def run(self, meta, passes, *, timings=None, deadline=None):  # type: ignore[no-untyped-def]
        boxes = np.array([[4, 4, 30, 20], [5, 4, 31, 21]], np.float32)
        return [{"boxes": boxes, "scores": np.array([0.9, 0.8], np.float32),
                 "labels": np.array([1, 1], np.int64)} for _ in passes]


def test_tta_merge_does_not_block_the_event_loop(monkeypatch):
    slow = 0.4
    fuse = detection_merge.bx.weighted_box_fusion

    def slow_fusion(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(slow)  # stands for a long pure-Python merge
        return fuse(*args, **kwargs)

    monkeypatch.setattr(detection_merge.bx, "weighted_box_fusion", slow_fusion)

    async def main() -> tuple[float, int]:
        done = asyncio.Event()
        gaps = []

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        image = np.zeros((60, 80, 3), np.uint8)
        resp = await run_task_directly(detection.TASK, image, detector_metadata(), _EchoRunner(),
                                       DetectOptions(scales=[1.0, 0.5], merge="wbf"))
        done.set()
        await tick
        return max(gaps), len(resp.detections)

    worst_gap, n = asyncio.run(main())
    assert n >= 1
    assert worst_gap < slow / 2, f"the event loop stalled {worst_gap:.2f} s during the merge"


def test_base64_whitespace_of_every_kind_is_ignored():
    data = _png()
    text = base64.b64encode(data).decode()
    spaced = " \t".join(text[i : i + 10] for i in range(0, len(text), 10))
    spaced = spaced.replace("A", "A\n", 3).replace("B", "B\u00a0", 2).replace("C", "C\u2028", 2)
    assert decode_base64("\r\n" + spaced + "\u3000") == data


class _FailingDetector(FakeDetector):
    """A FakeDetector whose backend fails as a Triton client does, with its internals."""

    def __init__(self, exc: Exception) -> None:
        super().__init__()
        self.exc = exc

    async def infer(self, model, inputs):  # type: ignore[no-untyped-def]
        raise self.exc


@pytest.mark.parametrize("exc,status,public", [
    (Unavailable("Triton at 127.0.0.1:9202 is unavailable: InferenceServerException: failed to "
                 "connect to all addresses", retry_after=1), 503, "the inference backend is unavailable"),
    (BackendError("Triton inference failed for 'fake_det': [StatusCode.INTERNAL] onnxruntime "
                  "error at /opt/tritonserver/backends/python"), 500, "inference failed in the backend"),
    (Timeout("Triton did not answer 'fake_det' within 120 s"), 504, "did not finish within"),
], ids=["unavailable", "backend_error", "timeout"])
def test_backend_failures_are_generic_for_clients_and_detailed_in_the_log(
        tmp_path, caplog, exc, status, public):
    """Item 9: no backend address, client library or path in the answer; all of it in the log."""
    app = create_app(Settings(repository=tmp_path), backend=_FailingDetector(exc))
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level("WARNING"):
        r = c.post("/detect", files={"file": ("a.png", _png(), "image/png")})
    assert r.status_code == status, r.text
    message = r.json()["error"]["message"]
    assert public in message
    for internal in ("127.0.0.1", "9202", "InferenceServerException", "StatusCode", "/opt/",
                     "onnxruntime", "Triton"):
        assert internal not in message, message
    assert exc.message in caplog.text  # the details are logged
    if status == 503:
        assert r.headers["retry-after"] == "1"


def test_decoder_internals_are_not_in_messages(client):
    """Item 9: Pillow's plugin names and constants stay out of the message (413, in words)."""
    import struct
    import zlib

    png = _png()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = png[:33] + chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * 4_000_000, 9)) + png[33:]
    r = client.post("/detect", files={"file": ("a.png", bomb, "image/png")})
    assert r.status_code == 413, r.text
    assert "PngImagePlugin" not in r.text and "MAX_TEXT_CHUNK" not in r.text
    assert "metadata" in r.json()["error"]["message"]


def test_echoed_values_are_cut_and_escaped():
    """Item 10: shown() quotes, cuts to 64 characters and makes control/bidi/NUL visible."""
    from service.errors import error_body, shown

    long = "m" * 10_200 + "\u202e\u0000"
    text = shown(long)
    assert text.startswith("'" + "m" * 64 + "…'") and "10202 characters" in text and len(text) < 100
    assert shown("a\u202eb\u0000c\x1b\n") == "'a\\u202eb\\x00c\\x1b\\n'"
    assert shown(10 ** 5000).startswith("an integer of about 5001 digits")
    body = error_body("x", "raw \u202e\u2066 and \u0000")  # the last guard for any message
    assert body["error"]["message"] == "raw \\u202e\\u2066 and \\x00"
    assert len(error_body("x", "y" * 50_000)["error"]["message"]) <= 1025


def test_lenient_mode_decodes_a_faulty_jpeg_and_flags_it(tmp_path):
    """Item 6: strict by default (400); lenient mode (off by default) answers with X-Image-Warning."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), np.uint8)).save(buf, "JPEG")
    faulty = buf.getvalue()[: len(buf.getvalue()) // 2] + b"\xff\xd9"
    assert Settings.model_fields["lenient_images"].default is False
    for lenient, status in ((False, 400), (True, 200)):
        app = create_app(Settings(repository=tmp_path, lenient_images=lenient), backend=FakeDetector())
        with TestClient(app, raise_server_exceptions=False) as c:
            r = c.post("/detect", content=faulty, headers={"content-type": "image/jpeg"})
            clean = c.post("/detect", content=buf.getvalue(), headers={"content-type": "image/jpeg"})
        assert r.status_code == status, r.text
        assert clean.status_code == 200 and "x-image-warning" not in clean.headers
        if lenient:
            assert "ends early" in r.headers["x-image-warning"]
        else:
            assert r.json()["error"]["code"] == "invalid_image" and "x-image-warning" not in r.headers
