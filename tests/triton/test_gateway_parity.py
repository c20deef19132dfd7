"""The gateway gives the same answers through Triton (gRPC and HTTP) as with embedded ONNX Runtime.

Three gateways run over real HTTP: embedded (the session's repository), Triton over gRPC and
Triton over HTTP (the session's tritonserver serving CPU twins of the same ONNX files).
Segmentation label maps, and the whole /segment JSON answer but its timings, must be identical;
landmarks must agree within 1e-3 px; detections (two graph inputs, FP32 ``image`` + INT64
``image_size``; three outputs) must have the same labels and boxes/scores within 1e-4; faces
(the BlazeFace twin: a batch of tiles per request) the same boxes, keypoints and scores within
1e-4, and /landmarks without boxes (the detector first, then the crops) within 1e-3 px.
"""

from __future__ import annotations

import io
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import DET_MODEL, FACE_DET_MODEL
from tests.helpers import encode_png, group_photo
from tests.triton.harness import TritonServer, live_gateway

PROTOCOLS = ("grpc", "http")
SEG_MODELS = ("seg_cityscapes", "seg_pascal", "seg_lip")


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Small real photographs as PNG bytes (lossless, so every gateway decodes the same pixels)."""
    from skimage import data

    astronaut = np.asarray(Image.fromarray(data.astronaut()).resize((192, 192), Image.BILINEAR))
    coffee = np.asarray(Image.fromarray(data.coffee()).resize((200, 150), Image.BILINEAR))
    return {"astronaut": encode_png(astronaut), "coffee": encode_png(coffee),
            "group": encode_png(group_photo()[0])}


@pytest.fixture(scope="module")
def gateways(serving_repo: Path, triton_server: TritonServer) -> Iterator[dict[str, str]]:
    """Base URLs: 'embedded', 'grpc', 'http'."""
    from service.settings import Settings

    settings = {
        # One ORT thread, as the Triton twins run: the same kernels give the same floats.
        "embedded": Settings(backend="embedded", repository=serving_repo, max_concurrency=2,
                             ort_intra_threads=1),
        **{
            p: Settings(backend="triton", triton_url=triton_server.url(p), triton_protocol=p,
                        repository=serving_repo, max_concurrency=2)
            for p in PROTOCOLS
        },
    }
    with ExitStack() as stack:
        yield {name: stack.enter_context(live_gateway(s)) for name, s in settings.items()}


def _segment(base: str, photo: bytes, model: str, options: dict) -> np.ndarray:
    r = httpx.post(
        f"{base}/segment", files={"file": ("photo.png", photo, "image/png")},
        data={"options": json.dumps({"model": model, **options})},
        headers={"Accept": "image/png"}, timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    assert r.headers["x-model"] == model
    return np.asarray(Image.open(io.BytesIO(r.content)))


def _landmarks_body(base: str, photo: bytes, options: dict) -> dict:
    options = dict(options)
    form = {"faces": json.dumps(options.pop("faces"))} if "faces" in options else {}
    r = httpx.post(
        f"{base}/landmarks", files={"file": ("photo.png", photo, "image/png")},
        data={"options": json.dumps(options), **form}, timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == options["model"]
    return body


def _landmarks(base: str, photo: bytes, options: dict) -> list[list[list[float]]]:
    return [face["landmarks"] for face in _landmarks_body(base, photo, options)["faces"]]


def test_models_discovered_from_triton(gateways: dict[str, str]) -> None:
    """/v1/models lists the same models with the same metadata through every backend; only
    ``runtime`` (what executes them) differs."""
    listings, runtimes = {}, {}
    for name, base in gateways.items():
        r = httpx.get(f"{base}/v1/models", timeout=30)
        assert r.status_code == 200, r.text
        listings[name] = {m["name"]: m for m in r.json()["models"]}
        runtimes[name] = {n: m.pop("runtime") for n, m in listings[name].items()}
    assert set(listings["embedded"]) >= {*SEG_MODELS, "face_300w", DET_MODEL}
    assert runtimes["embedded"]["face_300w"] == {"backend": "embedded",
                                                 "providers": ["CPUExecutionProvider"]}
    for protocol in PROTOCOLS:
        assert listings[protocol] == listings["embedded"]
        assert runtimes[protocol]["face_300w"]["backend"] == "triton"
        assert runtimes[protocol]["face_300w"]["providers"][:2] == ["triton:python", "KIND_CPU"]
        ready = httpx.get(f"{gateways[protocol]}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        assert ready.json()["backend"] == "triton"


@pytest.mark.parametrize("model", SEG_MODELS)
def test_segment_label_maps_identical(gateways: dict[str, str], photos: dict[str, bytes], model: str) -> None:
    """Multi-scale + flip label maps (windows, padding, batching) are identical through Triton."""
    options = {"scales": [0.5, 1.0], "flip": True}
    for photo in photos.values():
        expected = _segment(gateways["embedded"], photo, model, options)
        assert len(np.unique(expected)) > 1, "degenerate test model: a single label"
        for protocol in PROTOCOLS:
            got = _segment(gateways[protocol], photo, model, options)
            assert got.shape == expected.shape
            assert np.array_equal(got, expected), f"{model} via {protocol}: label maps differ"


def test_segment_json_identical(gateways: dict[str, str], photos: dict[str, bytes]) -> None:
    """The JSON answer (model block, image size, options used, class fractions, RLE, label map PNG)
    is the same through Triton, apart from the timings."""
    model = "seg_cityscapes"
    bodies = {}
    for name, base in gateways.items():
        r = httpx.post(
            f"{base}/segment", files={"file": ("photo.png", photos["coffee"], "image/png")},
            data={"options": json.dumps({"model": model, "rle": True})}, timeout=120,
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert {"decode", "inference", "encode"} <= set(body.pop("timings_ms"))
        bodies[name] = body
    expected = bodies["embedded"]
    assert expected["model"]["name"] == model and expected["model"]["dataset"] == "cityscapes"
    assert expected["image_size"] == [200, 150] and expected["label_map"]["format"] == "png"
    assert len(expected["classes"]) > 1 and all(c["rle"] for c in expected["classes"])
    for protocol in PROTOCOLS:
        assert bodies[protocol] == expected, f"{protocol}: /segment JSON differs"


def test_landmarks_match(gateways: dict[str, str], photos: dict[str, bytes]) -> None:
    """Landmarks of a face box and of the whole image agree within 1e-3 px, with and without flip."""
    cases = [
        {"model": "face_300w", "faces": [[150, 20, 210, 100]]},  # astronaut's face, roughly
        {"model": "face_300w", "flip": True, "faces": "whole_image"},
    ]
    photo = photos["astronaut"]
    for options in cases:
        expected = np.asarray(_landmarks(gateways["embedded"], photo, options), dtype=np.float64)
        assert expected.shape[-2:] == (68, 2)
        for protocol in PROTOCOLS:
            got = np.asarray(_landmarks(gateways[protocol], photo, options), dtype=np.float64)
            assert got.shape == expected.shape
            assert np.abs(got - expected).max() <= 1e-3, f"{protocol}: {np.abs(got - expected).max()}"


def _detect(base: str, photo: bytes, options: dict) -> dict:
    r = httpx.post(
        f"{base}/detect", files={"file": ("photo.png", photo, "image/png")},
        data={"options": json.dumps({"model": DET_MODEL, **options})}, timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == DET_MODEL
    return body


def _columns(body: dict) -> tuple[list[tuple[int, str, int | None]], np.ndarray, np.ndarray]:
    """(label_index, label, category_id) per detection, boxes [K, 4] and scores [K]."""
    dets = body["detections"]
    labels = [(d["label_index"], d["label"], d["category_id"]) for d in dets]
    boxes = np.asarray([d["box"] for d in dets], np.float64).reshape(-1, 4)
    scores = np.asarray([d["score"] for d in dets], np.float64)
    return labels, boxes, scores


def test_detect_matches(gateways: dict[str, str], photos: dict[str, bytes]) -> None:
    """/detect: one plain pass (the model's max size), and a flip pair at a reduced scale merged by
    NMS (two Triton calls, each a batch of one with both inputs), give the same labels and
    boxes/scores within 1e-4 through Triton."""
    # Scale 0.6 of 480x320: coffee (200x150) runs at 256x192, a third of the full-size cost.
    cases = [("astronaut", {}), ("coffee", {"flip": True, "scales": [0.6]})]
    for photo, options in cases:
        expected = _detect(gateways["embedded"], photos[photo], options)
        assert len(expected["options"]["network_inputs"]) == (2 if options.get("flip") else 1)
        labels, boxes, scores = _columns(expected)
        assert len(labels) > 0, f"degenerate test model: no detections on {photo}"
        assert all(1 <= i <= 80 and cid is not None for i, _, cid in labels)
        for protocol in PROTOCOLS:
            got = _detect(gateways[protocol], photos[photo], options)
            assert got["options"] == expected["options"]
            assert got["image_size"] == expected["image_size"]
            got_labels, got_boxes, got_scores = _columns(got)
            assert got_labels == labels, f"{photo} via {protocol}: labels differ"
            assert np.abs(got_boxes - boxes).max() <= 1e-4, f"{photo} via {protocol}: boxes"
            assert np.abs(got_scores - scores).max() <= 1e-4, f"{photo} via {protocol}: scores"


def _faces(base: str, photo: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = httpx.post(f"{base}/faces", files={"file": ("photo.png", photo, "image/png")},
                   data={"model": FACE_DET_MODEL}, timeout=120)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    return (np.asarray([f["box"] for f in faces], np.float64).reshape(-1, 4),
            np.asarray([f["keypoints"] for f in faces], np.float64).reshape(-1, 6, 2),
            np.asarray([f["score"] for f in faces], np.float64))


def test_faces_and_landmarks_without_boxes_match(gateways: dict[str, str],
                                                 photos: dict[str, bytes]) -> None:
    """The group photo: /faces (4 tiles in one batch of the twin) and /landmarks without boxes
    (the detector, then the three crops as one batch) give the embedded answers through Triton."""
    photo = photos["group"]
    boxes, keypoints, scores = _faces(gateways["embedded"], photo)
    assert len(scores) == 3
    expected = _landmarks_body(gateways["embedded"], photo, {"model": "face_300w"})
    assert expected["faces_source"] == "detected" and len(expected["faces"]) == 3
    points = np.asarray([f["landmarks"] for f in expected["faces"]], np.float64)
    for protocol in PROTOCOLS:
        b, k, s = _faces(gateways[protocol], photo)
        assert b.shape == boxes.shape, f"{protocol}: other faces"
        assert np.abs(b - boxes).max() <= 1e-4 and np.abs(k - keypoints).max() <= 1e-4
        assert np.abs(s - scores).max() <= 1e-4
        got = _landmarks_body(gateways[protocol], photo, {"model": "face_300w"})
        assert got["faces_source"] == "detected" and got["face_model"]["name"] == FACE_DET_MODEL
        got_points = np.asarray([f["landmarks"] for f in got["faces"]], np.float64)
        assert got_points.shape == points.shape
        assert np.abs(got_points - points).max() <= 1e-3, f"{protocol}: landmarks differ"


def test_several_images_per_request_through_triton(gateways: dict[str, str],
                                                   photos: dict[str, bytes]) -> None:
    """A several-image request (issue 14) through Triton answers what the embedded gateway
    answers: the same label maps per image, a broken image failing alone."""
    files = [("file", (f"{i}.png", p, "image/png")) for i, p in enumerate(
        [photos["coffee"], photos["astronaut"], b"\x89PNG\r\n\x1a\nbroken", photos["coffee"]])]
    data = {"options": json.dumps({"model": "seg_cityscapes", "scales": [0.75, 1.0],
                                   "flip": True})}
    bodies = {}
    for name, base in gateways.items():
        r = httpx.post(f"{base}/segment", files=files, data=data, timeout=300)
        assert r.status_code == 200, r.text
        bodies[name] = r.json()
    for name, body in bodies.items():
        assert body["images"] == 4 and body["failed"] == 1, name
        assert body["results"][2]["error"]["code"] == "invalid_image"
        maps = [res["label_map"]["data"] if "label_map" in res else None for res in body["results"]]
        ref = [res["label_map"]["data"] if "label_map" in res else None
               for res in bodies["embedded"]["results"]]
        assert maps == ref, name
        assert maps[0] == maps[3]
