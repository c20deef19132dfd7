"""The request and response conventions all three task endpoints share (service/http/forms.py,
negotiation.py, task_route.py):
the same request forms and field precedence, the same validation errors, ``Accept`` handling and
response headers. /segment and /landmarks run the session's exported models; /detect runs the
fake detector of conftest.py (no detection export needed here)."""

from __future__ import annotations

import base64
import io
import json

import httpx
import pytest
from PIL import Image

from tests.helpers import noise_png

SMALL = (64, 48)  # w, h


def _png(size: tuple[int, int] = SMALL) -> bytes:
    return noise_png(size[0], size[1], seed=1)


@pytest.fixture(scope="module")
def endpoints(gateway_url: str, fake_detector_url: str) -> dict[str, str]:
    """Base URL per task endpoint."""
    return {"/segment": gateway_url, "/landmarks": gateway_url, "/detect": fake_detector_url}


PATHS = ["/segment", "/landmarks", "/detect"]
MODEL = {"/segment": "seg_pascal", "/landmarks": "face_300w", "/detect": "fake_det"}


def _forms(path: str, png: bytes) -> list[dict]:
    """The same request as multipart (field), multipart (options JSON), JSON and raw body."""
    model = MODEL[path]
    return [
        dict(files={"file": ("a.png", png, "image/png")}, data={"model": model}),
        dict(files={"file": ("a.png", png, "image/png")}, data={"options": json.dumps({"model": model})}),
        dict(json={"image": base64.b64encode(png).decode(), "model": model}),
        dict(content=png, headers={"content-type": "image/png"}, params={"model": model}),
    ]


@pytest.mark.parametrize("path", PATHS)
def test_every_form_and_the_same_headers(endpoints, path):
    bodies = []
    for kwargs in _forms(path, _png()):
        r = httpx.post(f"{endpoints[path]}{path}", timeout=120, **kwargs)
        assert r.status_code == 200, (kwargs.keys(), r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-model"] == MODEL[path] and r.headers["x-random-init"] == "true"
        assert r.headers["x-image-size"] == "64x48"
        body = r.json()
        assert body["random_init"] is True and {"decode", "inference"} <= set(body["timings_ms"])
        # The shared head (service/schemas.py TaskResult) on every task endpoint.
        assert body["model"]["name"] == MODEL[path] and body["model"]["random_init"] is True
        assert set(body["model"]) == {"name", "arch", "dataset", "random_init", "weights_origin",
                                      "precision", "engine"}
        assert body["model"]["precision"] == r.headers["x-model-precision"] == "fp32"
        assert body["image_size"] == list(SMALL) and isinstance(body["options"], dict)
        body.pop("timings_ms")
        bodies.append(body)
    assert all(b == bodies[0] for b in bodies[1:])


def test_detect_response_shares_landmarks_pieces(endpoints):
    png = _png()
    det = httpx.post(f"{endpoints['/detect']}/detect", files={"file": ("a.png", png, "image/png")},
                     data={"overlay": "true", "overlay_format": "png"}, timeout=60).json()
    lm = httpx.post(f"{endpoints['/landmarks']}/landmarks", files={"file": ("a.png", png, "image/png")},
                    timeout=120).json()
    assert det["coordinate_frame"] == lm["coordinate_frame"]
    assert set(det["model"]) == set(lm["model"]) == {"name", "arch", "dataset", "random_init",
                                                     "weights_origin", "precision", "engine"}
    assert det["overlay"]["format"] == "png"
    assert Image.open(io.BytesIO(base64.b64decode(det["overlay"]["data"]))).size == SMALL
    assert [d["score"] for d in det["detections"]] == pytest.approx([0.9, 0.3])


def test_precedence_query_then_options_then_fields(endpoints):
    url = f"{endpoints['/detect']}/detect?score_threshold=0.95"
    files = {"file": ("a.png", _png(), "image/png")}

    def used(data=None):
        r = httpx.post(url, files=files, data=data, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["options"]["score_threshold"]

    assert used() == 0.95
    assert used({"options": json.dumps({"score_threshold": 0.5})}) == 0.5
    assert used({"options": json.dumps({"score_threshold": 0.5}), "score_threshold": "0.2"}) == 0.2
    assert used({"score_threshold": ""}) == 0.95  # an empty field counts as omitted


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("where", ["query", "form", "options", "json"])
def test_unknown_option_is_422_with_its_name(endpoints, path, where):
    png = _png()
    kwargs = {
        "query": dict(files={"file": ("a.png", png, "image/png")}, params={"colour": "red"}),
        "form": dict(files={"file": ("a.png", png, "image/png")}, data={"colour": "red"}),
        "options": dict(files={"file": ("a.png", png, "image/png")},
                        data={"options": json.dumps({"colour": "red"})}),
        "json": dict(json={"image": base64.b64encode(png).decode(), "colour": "red"}),
    }[where]
    r = httpx.post(f"{endpoints[path]}{path}", timeout=60, **kwargs)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_options" and "colour" in err["message"]


@pytest.mark.parametrize("path,options,words", [
    ("/segment", {"scales": [1.0, "x"]}, ["scales.", "valid number"]),
    ("/detect", {"scales": [1.0, "x"]}, ["scales.1"]),
    ("/landmarks", {"box_enlarge": -1}, ["box_enlarge", "greater than 0"]),
])
def test_validation_errors_name_the_field_path(endpoints, path, options, words):
    r = httpx.post(f"{endpoints[path]}{path}", timeout=60,
                   json={"image": base64.b64encode(_png()).decode(), **options})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_options"
    assert all(w in r.json()["error"]["message"] for w in words), r.text


@pytest.mark.parametrize("path", ["/segment", "/detect"])
@pytest.mark.parametrize("text", ["[1.0, ", "{not json"])
def test_malformed_json_text_in_a_field_is_422(endpoints, path, text):
    field = "scales" if text.startswith("[") else "options"
    r = httpx.post(f"{endpoints[path]}{path}", files={"file": ("a.png", _png(), "image/png")},
                   data={field: text}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_options", r.text
    assert field in r.json()["error"]["message"]


@pytest.mark.parametrize("path", PATHS)
def test_same_body_errors(endpoints, path):
    url = f"{endpoints[path]}{path}"
    cases = [
        (dict(content=b"{}", headers={"content-type": ""}), 415, "unsupported_content_type"),
        (dict(content=b"[1]", headers={"content-type": "application/json"}), 400, "invalid_json"),
        (dict(json={"model": MODEL[path]}), 400, "missing_image"),
        (dict(json={"image": 5}), 400, "invalid_base64"),
        (dict(files={"model": (None, MODEL[path])}), 400, "missing_file"),
        (dict(files={"file": ("a.png", _png(), "image/png"), "extra": ("b.png", b"x", "image/png")}),
         400, "invalid_multipart"),
        (dict(content=b"--x\r\nContent-Type: text/plain\r\n\r\nabc\r\n--x--\r\n",  # part without a name
              headers={"content-type": "multipart/form-data; boundary=x"}), 400, "invalid_multipart"),
    ]
    for kwargs, status, code in cases:
        r = httpx.post(url, timeout=60, **kwargs)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), (kwargs, r.text)


@pytest.mark.parametrize("path", PATHS)
def test_accept_negotiation(endpoints, path):
    url = f"{endpoints[path]}{path}"
    files = {"file": ("a.png", _png(), "image/png")}
    r = httpx.post(url, files=files, headers={"accept": "text/html"}, timeout=60)
    assert r.status_code == 406 and r.json()["error"]["code"] == "not_acceptable"
    assert "application/json" in r.json()["error"]["message"]
    r = httpx.post(url, files=files, headers={"accept": "text/html, application/*;q=0.5"}, timeout=120)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"


def test_segment_png_by_accept_preference(endpoints):
    url = f"{endpoints['/segment']}/segment"
    files = {"file": ("a.png", _png(), "image/png")}
    for accept, media in [("image/*", "image/png"), ("image/png, application/json;q=0.5", "image/png"),
                          ("application/json, image/png", "application/json"),
                          ("image/png;q=0, */*", "application/json")]:
        r = httpx.post(url, files=files, headers={"accept": accept}, timeout=120)
        assert r.status_code == 200 and r.headers["content-type"] == media, accept
        assert r.headers["x-image-size"] == "64x48"
