"""Health, readiness, metrics, model descriptions and docs over real HTTP."""

from __future__ import annotations

import httpx

from tests.helpers import repo_settings


def test_healthz_and_readyz(gateway_url):
    assert httpx.get(f"{gateway_url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{gateway_url}/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["backend"] == "embedded"
    assert {"seg_cityscapes", "seg_pascal", "seg_lip"} <= set(body["models"])


def test_readyz_503_without_models(live_server, tmp_path):
    url = live_server(repo_settings(tmp_path))
    r = httpx.get(f"{url}/readyz")
    assert r.status_code == 503
    assert r.json()["status"] == "not_ready" and r.headers["retry-after"] == "1"
    assert httpx.get(f"{url}/healthz").status_code == 200
    r = httpx.post(f"{url}/segment", files={"file": ("a.png", b"x", "image/png")})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


def test_models_list_and_detail(gateway_url):
    models = httpx.get(f"{gateway_url}/v1/models").json()["models"]
    by_name = {m["name"]: m for m in models}
    seg = by_name["seg_cityscapes"]
    assert seg["task"] == "segmentation" and seg["dataset"] == "cityscapes"
    assert seg["num_labels"] == 19 and seg["labels"][0] == "road"
    assert seg["random_init"] is True and seg["weights"]["origin"] == "random-init"
    assert seg["input"]["tensor"] == "image" and seg["input"]["channel_order"] == "RGB"
    assert seg["default_options"]["scales"] == [1.0] and seg["default_options"]["window"] == "cityscapes"
    assert seg["default_options"]["base_size"] == 256
    assert sum(m["default_for_task"] for m in models if m["task"] == "segmentation") == 1
    assert seg["inputs"] == [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]}]
    assert seg["outputs"] == [{"name": "logits", "dtype": "FP32", "dims": [19, -1, -1]}]
    face = by_name["face_300w"]
    assert face["inputs"] == [{"name": "image", "dtype": "FP32", "dims": [3, 256, 256]}]
    assert face["outputs"] == [{"name": "heatmaps", "dtype": "FP32", "dims": [68, 64, 64]}]
    one = httpx.get(f"{gateway_url}/v1/models/seg_lip").json()
    assert one["name"] == "seg_lip" and one["default_options"]["resize_to_square"] == 96
    r = httpx.get(f"{gateway_url}/v1/models/nope")
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["code"] == "model_not_found"
    assert err["message"].startswith("model 'nope' is not served; served models: ")
    assert {"seg_cityscapes", "seg_lip", "face_300w"} <= set(err["message"].split(": ")[1].split(", "))


def test_docs_and_openapi(gateway_url):
    assert httpx.get(f"{gateway_url}/docs").status_code == 200
    spec = httpx.get(f"{gateway_url}/openapi.json").json()
    content = spec["paths"]["/segment"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(content)
    # All three task answers document the same head and encoded-image pieces.
    schemas = spec["components"]["schemas"]
    for path in ("/segment", "/landmarks", "/detect"):
        answer = spec["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]
        one, several = answer["schema"]["anyOf"]  # one image, or several (issue 14)
        props = schemas[one["$ref"].split("/")[-1]]["properties"]
        assert several["$ref"].endswith("BatchResponse"), path
        assert props["model"] == {"$ref": "#/components/schemas/ModelUsed"}, path
        assert {"random_init", "image_size", "options", "timings_ms", "overlay"} <= set(props), path
        assert {"$ref": "#/components/schemas/EncodedImage"} in props["overlay"]["anyOf"], path


def test_metrics_count_requests_and_stages(gateway_url):
    from tests.helpers import photo_png

    r = httpx.post(f"{gateway_url}/segment", files={"file": ("a.png", photo_png(), "image/png")},
                   data={"model": "seg_pascal"}, timeout=120)
    assert r.status_code == 200, r.text
    text = httpx.get(f"{gateway_url}/metrics").text
    assert 'hrnet_requests_total{endpoint="/segment",model="seg_pascal",status="200"}' in text
    for stage in ("decode", "preprocess", "inference", "postprocess", "encode"):
        assert f'hrnet_stage_seconds_count{{endpoint="/segment",model="seg_pascal",stage="{stage}"}}' in text
    assert 'hrnet_backend_passes_total{model="seg_pascal"}' in text


def test_unknown_route_json_404(gateway_url):
    r = httpx.get(f"{gateway_url}/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_models_describe_every_input_and_output(fake_detector_url):
    url = fake_detector_url
    listed = httpx.get(f"{url}/v1/models").json()["models"]
    one = httpx.get(f"{url}/v1/models/fake_det").json()
    assert listed == [one]
    assert one["inputs"] == [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]},
                             {"name": "image_size", "dtype": "INT64", "dims": [2]}]
    assert [(o["name"], o["dtype"], o["dims"]) for o in one["outputs"]] == [
        ("boxes", "FP32", [-1, 4]), ("scores", "FP32", [-1]), ("labels", "INT64", [-1])]
    assert one["input"]["tensor"] == "image" and one["input"]["dtype"] == "FP32"
    assert one["default_options"]["max_detections"] == 100 and one["default_for_task"] is True
