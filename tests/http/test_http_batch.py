"""Several images per request over real HTTP (issue 14): eight images in one request answer what
eight single requests answer, on every task endpoint; images of one size share backend calls; an
image that fails fails alone; the request-wide limits hold."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import FACE_300W, SEG_CITYSCAPES
from tests.helpers import encode_png, face_photo, group_photo, photo, repo_settings, serve

#: Eight real photos: three sizes (so some passes share shapes across images and some do not).
_PHOTOS = [("coffee", (160, 96)), ("chelsea", (160, 96)), ("astronaut", (128, 128)),
           ("rocket", (160, 96)), ("coffee", (128, 128)), ("immunohistochemistry", (96, 80)),
           ("chelsea", (128, 128)), ("astronaut", (160, 96))]


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    return [encode_png(np.asarray(Image.fromarray(photo(n)).resize(s, Image.BILINEAR)))
            for n, s in _PHOTOS]


@pytest.fixture(scope="module")
def faces() -> list[bytes]:
    """Eight photos with faces: the three portraits, the three-face group, repeated."""
    group, _ = group_photo()
    one = [face_photo(n) for n in ("astronaut", "camera", "grace_hopper")]
    return [encode_png(im) for im in (one + [group]) * 2]


@pytest.fixture(scope="module")
def url(model_repo: Path) -> Iterator[str]:
    with serve(repo_settings(model_repo, max_images=8, max_batch=8)) as u:
        yield u


@pytest.fixture(scope="module")
def faces_url(faces_repo: Path) -> Iterator[str]:
    with serve(repo_settings(faces_repo, max_images=8)) as u:
        yield u


@pytest.fixture(scope="module")
def det_url(det_repo: Path) -> Iterator[str]:
    with serve(repo_settings(det_repo, request_timeout_s=600)) as u:
        yield u


def _files(images: list[bytes]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(images)]


def _post(base: str, path: str, images: list[bytes], **fields: Any) -> httpx.Response:
    data = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()}
    return httpx.post(f"{base}{path}", files=_files(images), data=data, timeout=600)


def _strip(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "timings_ms"}


def _batches(base: str, model: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=30).text
    m = re.search(rf'hrnet_backend_batches_total{{model="{model}"}} ([0-9.e+]+)', text)
    return float(m.group(1)) if m else 0.0


def _same_as_singles(base: str, path: str, images: list[bytes], **fields: Any) -> dict[str, Any]:
    """The batch answer, checked against one request per image (same order, same results)."""
    r = _post(base, path, images, **fields)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"] == len(images) and body["failed"] == 0
    assert r.headers["x-image-count"] == str(len(images))
    assert set(body["timings_ms"]) >= {"decode", "inference"}
    singles = []
    for png in images:
        one = _post(base, path, [png], **fields)
        assert one.status_code == 200, one.text
        singles.append(_strip(one.json()))
    assert [_strip(b) for b in body["results"]] == singles
    sizes = [f"{b['image_size'][0]}x{b['image_size'][1]}" for b in body["results"]]
    assert r.headers["x-image-size"] == ",".join(sizes)
    return body


def test_segment_eight_images_equal_eight_requests(url: str, photos: list[bytes]) -> None:
    before = _batches(url, SEG_CITYSCAPES)
    body = _same_as_singles(url, "/segment", photos, model=SEG_CITYSCAPES, scales="[1]",
                            flip=False)
    assert len({tuple(b["image_size"]) for b in body["results"]}) == 3
    # One pass per image; images of one size share a backend call: three sizes, three calls
    # (the eight single requests after it made eight).
    assert _batches(url, SEG_CITYSCAPES) - before == 3 + 8


def test_segment_multiscale_batch(url: str, photos: list[bytes]) -> None:
    """Multi-scale + flip with sliding windows: the passes of equal-size images interleave in
    the runner's batches and each image still gets exactly its own merge."""
    _same_as_singles(url, "/segment", photos[:4], model=SEG_CITYSCAPES, scales="0.75,1.5",
                     flip=True)


def test_landmarks_eight_images_with_detected_faces(faces_url: str, faces: list[bytes]) -> None:
    body = _same_as_singles(faces_url, "/landmarks", faces)
    counts = [len(b["faces"]) for b in body["results"]]
    assert counts == [1, 1, 1, 3] * 2  # one face per person, every image
    assert all(b["faces_source"] == "detected" for b in body["results"])


def test_faces_eight_images(faces_url: str, faces: list[bytes]) -> None:
    _same_as_singles(faces_url, "/faces", faces)


def test_detect_eight_images(det_url: str, photos: list[bytes]) -> None:
    _same_as_singles(det_url, "/detect", photos)


def test_json_images_with_their_own_faces(faces_url: str, faces: list[bytes]) -> None:
    """JSON ``images``: strings or objects with the image's own ``faces``; the request's
    ``faces`` is the default of items without."""
    b64 = [base64.b64encode(p).decode() for p in faces[:3]]
    box = [180, 72, 270, 162]
    r = httpx.post(f"{faces_url}/landmarks", timeout=300, json={
        "model": FACE_300W, "faces": "whole_image",
        "images": [{"image": b64[0], "faces": [box]}, b64[1], {"image": b64[2], "faces": "auto"}]})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["faces_source"] for x in res] == ["request", "whole_image", "detected"]
    single = httpx.post(f"{faces_url}/landmarks", timeout=300, json={
        "model": FACE_300W, "image": b64[0], "faces": [box]}).json()
    assert _strip(res[0]) == _strip(single)


def test_an_image_fails_alone(url: str, photos: list[bytes]) -> None:
    png = photos[0]
    tiny = encode_png(np.zeros((4, 4, 3), np.uint8))
    r = _post(url, "/segment", [png, b"\x89PNG\r\n\x1a\nbroken", tiny, b"GIF89a......", png],
              model=SEG_CITYSCAPES, scales="[1]", flip=False)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"] == 5 and body["failed"] == 2
    res = body["results"]
    assert res[1] == {"index": 1, "status": 400, "error": res[1]["error"]}
    assert res[1]["error"]["code"] == "invalid_image"
    assert res[3]["index"] == 3 and res[3]["status"] == 415
    assert res[3]["error"]["code"] == "unsupported_format"
    assert _strip(res[0]) == _strip(res[4]) and "label_map" in res[0]
    assert res[2]["image_size"] == [4, 4]
    assert r.headers["x-image-size"].split(",") == ["160x96", "-", "4x4", "-", "160x96"]
    # JSON: an item's bad base64 is its own error too.
    r = httpx.post(f"{url}/segment", timeout=120, json={
        "model": SEG_CITYSCAPES, "scales": [1], "images": ["%%%", base64.b64encode(png).decode()]})
    assert r.status_code == 200, r.text
    first, second = r.json()["results"]
    assert first["status"] == 400 and first["error"]["code"] == "invalid_base64"
    assert "label_map" in second


def test_an_image_over_its_own_limits_fails_alone(model_repo: Path, photos: list[bytes]) -> None:
    big = encode_png(np.asarray(Image.fromarray(photo("coffee")).resize((400, 300))))
    settings = repo_settings(model_repo, max_network_pixels=200_000)
    with serve(settings) as base:
        r = _post(base, "/segment", [photos[0], big], model=SEG_CITYSCAPES, scales="[1,1.5]")
    assert r.status_code == 200, r.text
    ok, over = r.json()["results"]
    assert "label_map" in ok
    assert over["status"] == 422 and over["error"]["code"] == "too_many_pixels"


def test_request_limits(model_repo: Path, photos: list[bytes]) -> None:
    settings = repo_settings(model_repo, max_images=3, max_request_pixels=40_000,
                             max_request_network_pixels=30_000)
    with serve(settings) as base:
        seg = dict(model=SEG_CITYSCAPES, scales="[1]")
        r = _post(base, "/segment", photos[:4], **seg)
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_images"
        assert "limit is 3" in r.json()["error"]["message"]
        r = httpx.post(f"{base}/segment", timeout=60, json={
            "images": [base64.b64encode(p).decode() for p in photos[:4]], **seg})
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_images"
        # 3 x 160x96 = 46,080 decoded pixels > 40,000: refused from the headers.
        three = [photos[0], photos[1], photos[3]]
        r = _post(base, "/segment", three, **seg)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels"
        # Two images pass the decoded total, not the network total (scale 1 of this protocol
        # feeds 256x154 per image).
        r = _post(base, "/segment", photos[:2], **seg)
        assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_pixels"
        assert "max_request_network_pixels" in r.json()["error"]["message"]
        # One image is held to its own limits only.
        assert _post(base, "/segment", photos[:1], **seg).status_code == 200


def test_batch_request_errors(url: str, photos: list[bytes]) -> None:
    b64 = base64.b64encode(photos[0]).decode()
    r = httpx.post(f"{url}/segment", json={"image": b64, "images": [b64]}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{url}/segment", json={"images": []}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "missing_image"
    r = httpx.post(f"{url}/segment", json={"images": b64}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(f"{url}/segment", json={"images": [{"image": b64, "scales": [1]}]}, timeout=60)
    item = r.json()["results"][0]
    assert item["status"] == 422 and "unknown field 'scales'" in item["error"]["message"]
    # A list has no PNG form: several images with Accept image/png only answer 406.
    r = httpx.post(f"{url}/segment", files=_files(photos[:2]), headers={"Accept": "image/png"},
                   timeout=60)
    assert r.status_code == 406, r.text
    r = httpx.post(f"{url}/segment", files=_files(photos[:2]), timeout=60,
                   headers={"Accept": "image/png, application/json;q=0.5"},
                   data={"model": SEG_CITYSCAPES, "scales": "1"})
    assert r.status_code == 200 and r.json()["images"] == 2
    # A multipart request with one file part answers as before (not a list).
    r = _post(url, "/segment", photos[:1], model=SEG_CITYSCAPES, scales="1")
    assert r.status_code == 200 and "label_map" in r.json()


def test_openapi_documents_the_batch_answer(url: str) -> None:
    spec = httpx.get(f"{url}/openapi.json", timeout=30).json()
    for path, name in (("/segment", "Segment"), ("/landmarks", "Landmarks"),
                       ("/detect", "Detect"), ("/faces", "Faces")):
        op = spec["paths"][path]["post"]
        schema = op["responses"]["200"]["content"]["application/json"]["schema"]
        refs = {s["$ref"].rsplit("/", 1)[-1] for s in schema["anyOf"]}
        assert f"{name}BatchResponse" in refs, refs
        body = op["requestBody"]["content"]["application/json"]["schema"]
        assert body["properties"]["images"]["anyOf"][0]["type"] == "array"
    batch = spec["components"]["schemas"]["SegmentBatchResponse"]
    assert {"images", "failed", "results"} <= set(batch["required"])
