"""The OpenAPI document tells the truth about the server (issue 11, item 11) and "Try it out"
works unchanged: requests built from the documented defaults answer 200 on every endpoint, the
documented bounds are the ones the server enforces, every response is documented, and the docs
pages load their assets from the gateway itself."""

from __future__ import annotations

import base64
import json
import re

import httpx
import pytest

from tests.helpers import noise_png, repo_settings

TASKS = {"/segment": "segment", "/landmarks": "landmarks", "/detect": "detect"}


@pytest.fixture(scope="module")
def endpoints(gateway_url: str, fake_detector_url: str) -> dict[str, str]:
    return {"/segment": gateway_url, "/landmarks": gateway_url, "/detect": fake_detector_url}


@pytest.fixture(scope="module")
def spec(gateway_url: str) -> dict:
    return httpx.get(f"{gateway_url}/openapi.json").json()


def _op(spec: dict, path: str, method: str = "post") -> dict:
    return spec["paths"][path][method]


def _form(spec: dict, path: str) -> dict:
    return _op(spec, path)["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


@pytest.mark.parametrize("path", list(TASKS))
def test_try_it_out_defaults_answer_200(spec, endpoints, path):
    """What Swagger UI sends unchanged: every multipart field at its documented default."""
    props = _form(spec, path)
    missing = [n for n, p in props.items() if n != "file" and "default" not in p]
    assert not missing, f"form fields without a default: {missing}"
    data = {n: p["default"] if isinstance(p["default"], str) else json.dumps(p["default"])
            for n, p in props.items() if n != "file"}
    png = noise_png(64, 48)
    r = httpx.post(f"{endpoints[path]}{path}", files={"file": ("a.png", png, "image/png")},
                   data=data, timeout=120)
    assert r.status_code == 200, r.text
    # The JSON form with every documented default (nulls included) answers the same.
    schema = _op(spec, path)["requestBody"]["content"]["application/json"]["schema"]
    body = {n: p["default"] for n, p in schema["properties"].items() if "default" in p}
    body["image"] = base64.b64encode(png).decode()
    r2 = httpx.post(f"{endpoints[path]}{path}", json=body, timeout=120)
    assert r2.status_code == 200, r2.text
    strip = lambda b: {k: v for k, v in b.items() if k != "timings_ms"}  # noqa: E731
    assert strip(r.json()) == strip(r2.json())
    # Every query option is declared, optional, with the same bounds as its form field.
    params = {p["name"]: p for p in _op(spec, path)["parameters"]}
    assert set(params) == set(props) - {"file"} - {"faces"}
    assert all(p["in"] == "query" and not p["required"] for p in params.values())


def test_get_endpoints_answer_200(spec, gateway_url):
    for path, item in spec["paths"].items():
        if "get" not in item:
            continue
        url = gateway_url + path.replace("{name}", "seg_cityscapes")
        r = httpx.get(url, timeout=30)
        assert r.status_code == 200, (path, r.text)
        documented = item["get"]["responses"]["200"]["content"]
        assert r.headers["content-type"].split(";")[0] in documented, path


def test_operation_ids_and_every_response_documented(spec):
    ids = {m["operationId"] for item in spec["paths"].values() for m in item.values()}
    assert {"segment", "landmarks", "detect", "healthz", "readyz", "metrics", "list_models",
            "get_model"} <= ids
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert not re.search(r"_(get|post)$", op["operationId"]), op["operationId"]
            for status, resp in op["responses"].items():
                assert resp.get("description"), (path, method, status)
    for path in TASKS:
        assert {"200", "400", "404", "413", "415", "422", "429", "503", "504"} <= set(
            _op(spec, path)["responses"])


def test_bounds_in_the_schema_are_the_servers(spec, endpoints, gateway_url, live_server, tmp_path):
    png = noise_png(32, 32)
    b64 = base64.b64encode(png).decode()
    seg_json = _op(spec, "/segment")["requestBody"]["content"]["application/json"]["schema"]
    # image: minLength 1
    image = seg_json["properties"]["image"]["anyOf"]  # a string, or null when 'images' is sent
    assert {"type": "string", "minLength": 1} in image and {"type": "null"} in image
    assert seg_json["properties"]["images"]["anyOf"][0]["minItems"] == 1
    r = httpx.post(f"{gateway_url}/segment", json={"image": ""}, timeout=60)
    assert 400 <= r.status_code < 500 and "error" in r.json()
    # scales: 1..8 items, each in [0.1, 4]
    lists = [s for s in seg_json["properties"]["scales"]["anyOf"] if s.get("type") == "array"]
    assert lists[0]["minItems"] == 1 and lists[0]["maxItems"] == 8
    assert lists[0]["items"]["minimum"] == 0.1 and lists[0]["items"]["maximum"] == 4.0
    for bad in ([], [0.0], [5.0], [1.0] * 9):
        r = httpx.post(f"{gateway_url}/segment", json={"image": b64, "scales": bad}, timeout=60)
        assert r.status_code == 422, (bad, r.text)
    # detection max_size: two sides in [32, 4096]
    det_json = _op(spec, "/detect")["requestBody"]["content"]["application/json"]["schema"]
    size = [s for s in det_json["properties"]["max_size"]["anyOf"] if s.get("type") == "array"][0]
    assert size["minItems"] == size["maxItems"] == 2
    assert all(i["minimum"] == 32 and i["maximum"] == 4096 for i in size["prefixItems"])
    r = httpx.post(f"{endpoints['/detect']}/detect", json={"image": b64, "max_size": [0, 0]})
    assert r.status_code == 422
    # multipart box_enlarge > 0 (the form field keeps the option's bound)
    enlarge = _form(spec, "/landmarks")["box_enlarge"]
    number = [s for s in enlarge["anyOf"] if s.get("type") == "number"][0]
    assert number["exclusiveMinimum"] == 0
    r = httpx.post(f"{gateway_url}/landmarks", files={"file": ("a.png", png, "image/png")},
                   data={"box_enlarge": "0"}, timeout=60)
    assert r.status_code == 422
    alpha = _form(spec, "/segment")["overlay_alpha"]
    assert (alpha["minimum"], alpha["maximum"], alpha["default"]) == (0.0, 1.0, 0.5)
    # /readyz documents its 503, which an empty gateway answers.
    assert "503" in _op(spec, "/readyz", "get")["responses"]
    empty = live_server(repo_settings(tmp_path))
    assert httpx.get(f"{empty}/readyz").status_code == 503
    # /metrics is text, not JSON.
    assert list(_op(spec, "/metrics", "get")["responses"]["200"]["content"]) == ["text/plain"]
    assert httpx.get(f"{gateway_url}/metrics").headers["content-type"].startswith("text/plain")


def test_docs_pages_use_local_assets_only(gateway_url):
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{gateway_url}{page}").text
        refs = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert refs and all(not re.match(r"[a-z]+://|//", ref) for ref in refs), (page, refs)
        assert "fonts.googleapis" not in html and "cdn." not in html
        for ref in refs:
            r = httpx.get(f"{gateway_url}/{ref}")
            assert r.status_code == 200 and len(r.content) > 1000, ref
    assert httpx.get(f"{gateway_url}/docs/assets/swagger-ui.css").headers[
        "content-type"].startswith("text/css")
    r = httpx.get(f"{gateway_url}/docs/assets/..%2Fcore.py")
    assert r.status_code == 404
