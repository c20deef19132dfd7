"""The Python client (``client/``, package ``hrnet_client``) against a real gateway over HTTP:
every task, every input kind, sync and async, typed results, errors, retries on 429/503 that
honour Retry-After, and that it needs none of the gateway's dependencies."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from hrnet_client import AsyncClient, Client, GatewayError, decode_png, encode_png
from tests.helpers import photo, photo_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def street() -> np.ndarray:
    return np.asarray(Image.fromarray(photo("coffee")).resize((96, 64), Image.BILINEAR))


def test_every_input_kind_gives_the_same_label_map(gateway_url, street, tmp_path):
    png = encode_png(street)
    path = tmp_path / "street.png"
    path.write_bytes(png)
    with Client(gateway_url) as client:
        reference = client.label_map(street, model="seg_cityscapes")
        assert reference.shape == (64, 96) and reference.dtype == np.uint8
        for image in (str(path), path, png, Image.fromarray(street), io.BytesIO(png)):
            np.testing.assert_array_equal(client.label_map(image, model="seg_cityscapes"),
                                          reference)
        seg = client.segment(path, model="seg_cityscapes", rle=True, confidence=True,
                             overlay=True)
    # The JSON answer's PNG and the raw binary answer are the same map.
    np.testing.assert_array_equal(seg.label_map, reference)
    assert seg.model.name == "seg_cityscapes" and seg.random_init is True
    assert (seg.model.precision, seg.model.engine) == ("fp32", "onnxruntime")
    assert seg.image_size == (96, 64) and seg.labels[0] == "road"
    assert sum(c.pixels for c in seg.classes) == 96 * 64
    assert all(c.label_id is not None and c.rle is not None for c in seg.classes)
    assert seg.confidence.shape == (64, 96) and 0 <= seg.confidence.min() <= 1
    assert Image.open(io.BytesIO(seg.overlay)).size == (96, 64)
    assert {"decode", "inference"} <= set(seg.timings_ms)


def test_landmarks_and_detection(gateway_url, detector_url):
    face = photo_png((128, 128), "astronaut")
    with Client(gateway_url) as client:
        lm = client.landmarks(face, faces=[[30, 10, 100, 90]], coco_keypoints=True)
        whole = client.landmarks(face)
    f = lm.faces[0]
    assert len(lm.labels) == 68 and f.landmarks.shape == (68, 2) and f.box == [30, 10, 100, 90]
    assert f.confidence.shape == (68,) and ((0 <= f.scores) & (f.scores <= 1)).all()
    assert len(f.keypoints) == 68 * 3 and whole.faces[0].box is None
    with Client(detector_url) as client:
        det = client.detect(photo_png((320, 240), "astronaut"), score_threshold=0.0,
                            max_detections=10, coco_results=True, image_id=3)
    assert 0 < len(det.detections) <= 10 and det.boxes.shape == (len(det.detections), 4)
    assert list(det.scores) == sorted(det.scores, reverse=True)
    d = det.detections[0]
    assert d.bbox == pytest.approx((d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]),
                                   abs=2e-3)
    assert det.coco_results[0]["image_id"] == 3


def test_async_client_runs_requests_concurrently(gateway_url, street):
    async def main():
        async with AsyncClient(gateway_url) as client:
            maps = await asyncio.gather(*[client.label_map(street, model="seg_cityscapes")
                                          for _ in range(3)])
            lm = await client.landmarks(photo_png((64, 64), "astronaut"))
            models = await client.models()
            return maps, lm, models, await client.ready()

    maps, lm, models, ready = asyncio.run(main())
    assert all((m == maps[0]).all() for m in maps) and len(lm.faces) == 1
    assert {"seg_cityscapes", "face_300w"} <= {m["name"] for m in models} and ready


def test_several_images_per_request(gateway_url, detector_url, street):
    """``*_many``: one request, the results in order, equal to one call per image; a broken
    image is its own GatewayError in the list."""
    other = np.ascontiguousarray(street[::-1])
    with Client(gateway_url) as client:
        many = client.segment_many([street, other, b"\x89PNG\r\n\x1a\nbroken", street],
                                   model="seg_cityscapes")
        one = client.segment(other, model="seg_cityscapes")
        faces = client.landmarks_many([photo_png((64, 64), "astronaut")] * 2,
                                      faces=[[10, 5, 50, 55]])
    assert isinstance(many[2], GatewayError) and many[2].status == 400
    assert many[2].code == "invalid_image"
    np.testing.assert_array_equal(many[1].label_map, one.label_map)
    np.testing.assert_array_equal(many[0].label_map, many[3].label_map)
    assert [f.faces[0].box for f in faces] == [[10, 5, 50, 55]] * 2

    async def detect():
        async with AsyncClient(detector_url) as client:
            return await client.detect_many([photo_png((160, 120), "astronaut")] * 2,
                                            score_threshold=0.0)

    dets = asyncio.run(detect())
    assert len(dets) == 2 and list(dets[0].scores) == list(dets[1].scores)


def test_errors_carry_the_gateways_code_and_message(gateway_url, street):
    with Client(gateway_url) as client:
        with pytest.raises(GatewayError) as info:
            client.segment(street, model="nope")
        assert info.value.status == 404 and info.value.code == "model_not_found"
        assert "seg_cityscapes" in info.value.message  # the 404 lists the served models
        with pytest.raises(GatewayError) as info:
            client.segment(street, colour="red")
        assert info.value.status == 422 and "colour" in info.value.message
        assert client.model("face_300w")["task"] == "landmarks"
        assert client.health() == {"status": "ok"}


def test_retries_honour_retry_after():
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        assert request.headers["authorization"] == "Bearer k1"
        if len(calls) < 3:
            status = 429 if len(calls) == 1 else 503
            return httpx.Response(status, headers={"Retry-After": "0.2"},
                                  json={"error": {"code": "overloaded", "message": "busy"}})
        return httpx.Response(200, json={"status": "ok"})

    with Client("http://gw", api_key="k1", transport=httpx.MockTransport(handler)) as client:
        assert client.health() == {"status": "ok"}
    assert len(calls) == 3 and calls[1] - calls[0] >= 0.19 and calls[2] - calls[1] >= 0.19
    calls.clear()
    with Client("http://gw", api_key="k1", retries=1, transport=httpx.MockTransport(handler)) as c:
        with pytest.raises(GatewayError) as info:
            c.health()
    assert info.value.status == 503 and len(calls) == 2


def test_timeouts_are_enforced(live_server):
    import anyio
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/healthz")
    async def slow() -> dict:
        await anyio.sleep(3)
        return {"status": "ok"}

    url = live_server(app)
    with Client(url, timeout=0.3, retries=0) as client:
        t0 = time.monotonic()
        with pytest.raises(httpx.TimeoutException):
            client.health()
        assert time.monotonic() - t0 < 2


def test_png_codec_without_pillow():
    rng = np.random.default_rng(0)
    for arr in (rng.integers(0, 256, (7, 5, 3), dtype=np.uint8),
                rng.integers(0, 256, (4, 9), dtype=np.uint8)):
        assert (np.array(Image.open(io.BytesIO(encode_png(arr)))) == arr).all()
    code = ("import sys; sys.modules['PIL'] = None\n"
            "import numpy as np\n"
            "from hrnet_client import decode_png, encode_png\n"
            "a = (np.arange(60).reshape(6, 10) % 19).astype(np.uint8)\n"
            "assert (decode_png(encode_png(a)) == a).all()\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "client")
    from service.imaging.encode import label_png

    labels = (np.arange(600).reshape(20, 30) % 19).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(label_png(labels, None)), labels)


def test_the_client_needs_none_of_the_gateways_dependencies():
    """Installable alone: only httpx + numpy (Pillow optional), and it imports nothing else."""
    import tomllib

    meta = tomllib.loads((ROOT / "client" / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0].split("<")[0] for d in meta["dependencies"]] == ["httpx", "numpy"]
    blocked = ["fastapi", "starlette", "service", "onnxruntime", "cv2", "pydantic", "PIL",
               "tritonclient", "torch", "uvicorn", "model_export"]
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None\n"
            "import hrnet_client\n"
            "from hrnet_client import Client, AsyncClient\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT / "client")
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_readme_example_runs(gateway_url, detector_url, tmp_path):
    """examples/client.py (what the README shows) against the live gateways."""
    Image.fromarray(photo("coffee")).resize((120, 80)).save(tmp_path / "street.jpg")
    Image.fromarray(photo("astronaut")).resize((128, 128)).save(tmp_path / "face.jpg")
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "client.py"), "--url", gateway_url,
         "--detect-url", detector_url, str(tmp_path / "street.jpg"), str(tmp_path / "face.jpg")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "label map" in out.stdout and "landmarks" in out.stdout and "detections" in out.stdout
