"""POST /segment over real HTTP: multipart, JSON base64, raw PNG answers, RLE, errors, overload."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from service.app import create_app
from service.runtime.backends.embedded import EmbeddedBackend
from tests.helpers import photo_png, read_png, repo_settings


def test_multipart_json_response(gateway_url):
    opts = {"model": "seg_cityscapes", "scales": [0.75, 1.25], "flip": True, "rle": True,
            "confidence": True, "overlay": True, "label_ids": True}
    r = httpx.post(f"{gateway_url}/segment", files={"file": ("a.png", photo_png(), "image/png")},
                   data={"options": json.dumps(opts)}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    info = httpx.get(f"{gateway_url}/v1/models/seg_cityscapes").json()
    assert body["model"] == {"name": "seg_cityscapes", "arch": "hrnetv2_w18_small_v1",
                             "dataset": "cityscapes", "random_init": True,
                             "weights_origin": info["weights"]["origin"],
                             "precision": "fp32", "engine": "onnxruntime"}
    assert body["random_init"] is True and r.headers["x-random-init"] == "true"
    assert body["image_size"] == [240, 160] and r.headers["x-image-size"] == "240x160"
    assert not {"width", "height", "dataset"} & set(body)  # the old flat shape is gone
    used = body["options"]
    assert used["scales"] == [0.75, 1.25] and used["flip"] is True and used["window"] == "cityscapes"
    assert used["passes"] == 2 * (1 + 4)  # 0.75: whole; 1.25: 320x213 in 128x256 windows, 2x2
    labels = read_png(body["label_map"]["data"])
    assert labels.shape == (160, 240)
    im = Image.open(io.BytesIO(base64.b64decode(body["label_map"]["data"])))
    assert im.mode == "P" and im.getpalette()[:3] == [128, 64, 128]  # Cityscapes 'road' colour
    total = sum(c["pixels"] for c in body["classes"])
    assert total == 240 * 160 and abs(sum(c["fraction"] for c in body["classes"]) - 1) < 1e-4
    assert set(np.unique(labels)) == {c["id"] for c in body["classes"]}
    assert len(body["classes"]) >= 2
    # RLE round trip through pycocotools equals the label map.
    for c in body["classes"]:
        rle = {"size": c["rle"]["size"], "counts": c["rle"]["counts"].encode()}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), labels == c["id"])
    conf = read_png(body["confidence"]["data"])
    assert conf.shape == (160, 240) and conf.dtype == np.uint8 and conf.max() > 0
    ov = Image.open(io.BytesIO(base64.b64decode(body["overlay"]["data"])))
    assert ov.format == "JPEG" and ov.size == (240, 160)
    ids = read_png(body["label_ids"]["data"])
    lut = {0: 7, 1: 8, 2: 11, 18: 33}
    for train_id, label_id in lut.items():
        if (labels == train_id).any():
            assert (ids[labels == train_id] == label_id).all()
    assert {"decode", "inference", "postprocess", "encode"} <= set(body["timings_ms"])


def test_json_base64_and_accept_png_agree(gateway_url):
    png = photo_png()
    r1 = httpx.post(f"{gateway_url}/segment",
                    json={"image": base64.b64encode(png).decode(), "model": "seg_pascal"}, timeout=120)
    assert r1.status_code == 200, r1.text
    a = read_png(r1.json()["label_map"]["data"])
    assert r1.json()["options"]["window"] == "base"
    r2 = httpx.post(f"{gateway_url}/segment", files={"file": ("a.png", png, "image/png")},
                    data={"model": "seg_pascal"}, headers={"Accept": "image/png"}, timeout=120)
    assert r2.status_code == 200 and r2.headers["content-type"] == "image/png"
    assert r2.headers["x-model"] == "seg_pascal" and r2.headers["x-image-size"] == "240x160"
    assert np.array_equal(a, read_png(r2.content))
    # Raw image body with options in the query string.
    r3 = httpx.post(f"{gateway_url}/segment?model=seg_pascal&label_map=true", content=png,
                    headers={"Content-Type": "image/png"}, timeout=120)
    assert r3.status_code == 200, r3.text
    assert np.array_equal(a, read_png(r3.json()["label_map"]["data"]))


def test_binary_label_maps_equal_the_png(gateway_url):
    """``Accept: application/octet-stream`` and ``application/x-npy`` answer the same label map as
    the PNG, uint8, with its shape and dtype in the headers."""
    png = photo_png()
    files = {"file": ("a.png", png, "image/png")}
    ref = read_png(httpx.post(f"{gateway_url}/segment", files=files, data={"model": "seg_pascal"},
                              headers={"Accept": "image/png"}, timeout=120).content)
    raw = httpx.post(f"{gateway_url}/segment", files=files, data={"model": "seg_pascal"},
                     headers={"Accept": "application/octet-stream"}, timeout=120)
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["x-label-map-shape"] == "160,240" and raw.headers["x-label-map-dtype"] == "uint8"
    assert len(raw.content) == 160 * 240
    assert np.array_equal(np.frombuffer(raw.content, np.uint8).reshape(160, 240), ref)
    npy = httpx.post(f"{gateway_url}/segment", files=files, data={"model": "seg_pascal"},
                     headers={"Accept": "application/x-npy"}, timeout=120)
    assert npy.status_code == 200 and npy.headers["content-type"] == "application/x-npy"
    arr = np.load(io.BytesIO(npy.content), allow_pickle=False)
    assert arr.dtype == np.uint8 and np.array_equal(arr, ref)
    assert npy.headers["x-model"] == "seg_pascal"
    stages = dict(p.strip().split(";dur=") for p in npy.headers["server-timing"].split(","))
    assert {"decode", "inference", "encode"} <= set(stages) and float(stages["inference"]) > 0


def test_form_fields_and_multi_scales(gateway_url):
    r = httpx.post(f"{gateway_url}/segment", files={"file": ("a.png", photo_png((120, 80)), "image/png")},
                   data={"model": "seg_lip", "scales": "multi", "flip": "false", "label_map": "false"},
                   timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["options"]["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert body["options"]["flip"] is False and body["label_map"] is None
    assert body["options"]["resize_to_square"] == 96


@pytest.mark.parametrize(
    "kwargs,status,code",
    [
        (dict(data={"model": "face_300w"}), 400, "wrong_task"),
        (dict(data={"model": "nope"}), 404, "model_not_found"),
        (dict(data={"scales": "0.5,9"}), 422, "invalid_options"),
        (dict(data={"options": "{not json"}), 422, "invalid_options"),
        (dict(data={"bogus": "1"}), 422, "invalid_options"),
        (dict(data={"model": "seg_pascal", "label_ids": "true"}), 422, "invalid_options"),
    ],
)
def test_errors(gateway_url, kwargs, status, code):
    r = httpx.post(f"{gateway_url}/segment", files={"file": ("a.png", photo_png((64, 48)), "image/png")},
                   timeout=60, **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_unsupported_content_type_and_bad_image(gateway_url):
    r = httpx.post(f"{gateway_url}/segment", content=b"hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_content_type"
    r = httpx.post(f"{gateway_url}/segment", files={"file": ("a.png", b"not an image", "image/png")})
    assert r.status_code in (400, 415) and "error" in r.json()


class SlowBackend(EmbeddedBackend):
    """The embedded backend with a fixed delay per call (to hold the only inference slot)."""

    delay = 1.5

    async def infer(self, model, inputs):
        await asyncio.sleep(self.delay)
        return await super().infer(model, inputs)


def test_overload_429_with_retry_after(live_server, model_repo):
    settings = repo_settings(model_repo, max_concurrency=1, max_queue=0, retry_after_s=2)
    url = live_server(create_app(settings, backend=SlowBackend(settings)))
    png = photo_png((64, 48))
    first: dict = {}

    def slow():
        first["r"] = httpx.post(f"{url}/segment", files={"file": ("a.png", png, "image/png")}, timeout=60)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.6)  # the first request now holds the only slot
    r = httpx.post(f"{url}/segment", files={"file": ("a.png", png, "image/png")}, timeout=60)
    t.join()
    assert first["r"].status_code == 200
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "2" and r.json()["error"]["code"] == "overloaded"
    text = httpx.get(f"{url}/metrics").text
    assert 'hrnet_requests_total{endpoint="/segment",model="seg_cityscapes",status="429"} 1.0' in text


def test_timeout_504(live_server, model_repo):
    settings = repo_settings(model_repo, request_timeout_s=0.3)
    url = live_server(create_app(settings, backend=SlowBackend(settings)))
    r = httpx.post(f"{url}/segment", files={"file": ("a.png", photo_png((64, 48)), "image/png")}, timeout=60)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"


def test_body_limit_413(live_server, model_repo):
    url = live_server(repo_settings(model_repo, max_body_bytes=1000))
    r = httpx.post(f"{url}/segment", files={"file": ("a.png", photo_png(), "image/png")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
