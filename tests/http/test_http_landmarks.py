"""POST /landmarks over real HTTP (uvicorn): multipart, JSON base64, raw body, faces, flip, overlay."""

from __future__ import annotations

import base64
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

ASTRONAUT_FACE = [150, 40, 270, 190]  # x1, y1, x2, y2 of the face in skimage's astronaut()


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(skdata.astronaut()).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def post_multipart(url, jpeg, **fields):
    data = {k: (json.dumps(v) if not isinstance(v, str) else v) for k, v in fields.items()}
    return httpx.post(f"{url}/landmarks", files={"file": ("a.jpg", jpeg, "image/jpeg")}, data=data, timeout=120)


def post_json(url, jpeg, **fields):
    return httpx.post(f"{url}/landmarks", json={"image": base64.b64encode(jpeg).decode(), **fields}, timeout=120)


def test_multipart_one_face_with_overlay(gateway_url, astronaut_jpeg):
    r = post_multipart(gateway_url, astronaut_jpeg, faces=[ASTRONAUT_FACE], overlay="true", overlay_format="png")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-random-init"] == "true" and r.headers["x-model"] == "face_300w"
    body = r.json()
    assert body["model"]["name"] == "face_300w" and body["random_init"] is True
    assert body["image_size"] == [512, 512] and body["faces_source"] == "request"
    assert len(body["labels"]) == 68 and body["labels"][0] == "jaw_1"
    face = body["faces"][0]
    assert face["box"] == ASTRONAUT_FACE and face["center"] == [210.0, 115.0]
    assert face["scale"] == pytest.approx(150 / 200 * 1.25)
    pts = np.array(face["landmarks"])
    assert pts.shape == (68, 2) and len(face["confidence"]) == 68
    x1, y1, x2, y2 = face["crop_box"]
    assert (pts[:, 0] >= x1).all() and (pts[:, 0] <= x2).all() and (pts[:, 1] >= y1).all() and (pts[:, 1] <= y2).all()
    assert body["options"] == {
        "flip": False, "box_enlarge": 1.25, "contrast_stretch": True, "overlay": True,
        "input_size": [256, 256], "heatmap_size": [64, 64],
    }
    ov = Image.open(io.BytesIO(base64.b64decode(body["overlay"]["data"])))
    assert ov.format == "PNG" and ov.size == (512, 512)
    assert {"decode", "preprocess", "inference", "postprocess"} <= set(body["timings_ms"])


def test_json_multipart_and_raw_agree(gateway_url, astronaut_jpeg):
    a = post_multipart(gateway_url, astronaut_jpeg, faces=[ASTRONAUT_FACE]).json()
    b = post_json(gateway_url, astronaut_jpeg, faces=[{"box": ASTRONAUT_FACE}]).json()
    c = httpx.post(
        f"{gateway_url}/landmarks", content=astronaut_jpeg, headers={"content-type": "image/jpeg"},
        params={"faces": json.dumps([ASTRONAUT_FACE])}, timeout=120,
    ).json()
    d = post_json(gateway_url, astronaut_jpeg, faces=[{"center": [210, 115], "scale": 0.9375}]).json()
    assert a["faces"][0]["landmarks"] == b["faces"][0]["landmarks"] == c["faces"][0]["landmarks"]
    assert d["faces"][0]["landmarks"] == a["faces"][0]["landmarks"]
    assert d["faces"][0]["box"] is None


def test_two_faces_batched_equal_single_requests(gateway_url, astronaut_jpeg):
    boxes = [ASTRONAUT_FACE, [300, 250, 420, 400]]
    both = post_json(gateway_url, astronaut_jpeg, faces=boxes).json()
    assert [f["index"] for f in both["faces"]] == [0, 1]
    for i, box in enumerate(boxes):
        one = post_json(gateway_url, astronaut_jpeg, faces=[box]).json()
        np.testing.assert_allclose(one["faces"][0]["landmarks"], both["faces"][i]["landmarks"], atol=1e-3)


def test_whole_image_and_flip_options(gateway_url):
    face = skdata.astronaut()[40:190, 150:270]  # a pre-cropped face, 120x150
    buf = io.BytesIO()
    Image.fromarray(face).save(buf, "PNG")
    r = post_json(gateway_url, buf.getvalue(), flip=True, model="face_300w")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["faces_source"] == "whole_image" and body["options"]["flip"] is True
    f = body["faces"][0]
    assert f["center"] == [60.0, 75.0] and f["scale"] == pytest.approx(150 / 200)
    assert f["crop_box"] == [-15.0, 0.0, 135.0, 150.0]


def test_exif_rotated_upload(gateway_url):
    img = skdata.astronaut()[:200, :300]
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", exif=exif)
    r = post_multipart(gateway_url, buf.getvalue())
    assert r.status_code == 200, r.text
    assert r.json()["image_size"] == [200, 300] and r.headers["x-image-size"] == "200x300"


def test_landmarks_model_described(gateway_url):
    info = httpx.get(f"{gateway_url}/v1/models/face_300w").json()
    assert info["task"] == "landmarks" and info["default_for_task"] is True
    assert info["default_options"]["box_enlarge"] == 1.25
