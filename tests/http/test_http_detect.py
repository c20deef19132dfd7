"""Exported graph vs PyTorch, repository entry, and ``POST /detect`` over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import DET_MODEL as MODEL_NAME
from tests.helpers import encode_png, photo


def _detect(url: str, rgb: np.ndarray, **options) -> httpx.Response:
    files = {"file": ("img.png", encode_png(rgb), "image/png")}
    return httpx.post(f"{url}/detect", files=files,
                      data={"options": json.dumps(options)} if options else None, timeout=300)


def test_entry_metadata_and_parity(det_repo: Path) -> None:
    from model_export.repository import metadata_from_config, read_config
    from service.contract import ModelMetadata

    entry = det_repo / MODEL_NAME
    meta = ModelMetadata.from_json((entry / "hrnet.json").read_text())
    assert meta == metadata_from_config(read_config(entry))
    assert meta.task == "detection" and meta.max_batch_size == 1 and meta.dataset == "coco"
    assert meta.arch == "hrnetv2p_w18"  # the detection arch's registry name
    assert meta.labels[0] == "__background__" and meta.labels[1] == "person" and len(meta.labels) == 81
    assert meta.label_ids[80] == 90 and meta.weights.random_init
    assert [(i.name, i.dtype, i.dims) for i in meta.inputs] == [
        ("image", "FP32", [3, -1, -1]), ("image_size", "INT64", [2])]
    assert [o.name for o in meta.outputs] == ["boxes", "scores", "labels"]
    assert meta.outputs[2].dtype == "INT64" and meta.detection.box_convention == "legacy_plus_one"
    assert tuple(meta.detection.max_size) == (480, 320)
    assert meta.normalization.mean == (123.675, 116.28, 103.53)
    assert meta.normalization.pixel_scale == 1.0
    assert any("480x320" in n for n in meta.notes) and any("rpn_post_nms_top_n" in n
                                                           for n in meta.notes)
    parity = json.loads((entry / "parity.json").read_text())
    assert parity["passed"] and parity["dynamic_size_checked"]
    assert all(c["reference"] > 0 and c["match_rate"] >= 0.95 for c in parity["cases"])
    assert {tuple(c["valid_size"]) for c in parity["cases"]} != {tuple(c["size"])
                                                                 for c in parity["cases"]}


def test_triton_config_has_both_inputs_and_warmup_data(det_repo: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    from model_export.repository import read_config

    entry = det_repo / MODEL_NAME
    cfg = read_config(entry)
    assert cfg.max_batch_size == 1
    assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
        ("image", mc.TYPE_FP32, [3, -1, -1]), ("image_size", mc.TYPE_INT64, [2])]
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    (warm,) = cfg.model_warmup
    image, size = warm.inputs["image"], warm.inputs["image_size"]
    assert list(image.dims) == [3, 320, 480] and image.zero_data  # largest padded demo input
    assert size.data_type == mc.TYPE_INT64 and list(size.dims) == [2]
    data = (entry / "warmup" / size.input_data_file).read_bytes()
    assert np.frombuffer(data, "<i8").tolist() == [320, 480]


def _session(det_repo: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(det_repo / MODEL_NAME / "1" / "model.onnx"),
                                providers=["CPUExecutionProvider"])


def test_graph_runs_at_another_size_and_clips_to_image_size(det_repo: Path) -> None:
    from model_export.onnx.detection import photo_input

    x, hw = photo_input("astronaut", (300, 300))  # 300 x 300 padded to 320 x 320
    assert x.shape == (1, 3, 320, 320) and hw.tolist() == [[300, 300]]
    boxes, scores, labels = _session(det_repo).run(
        None, {"image": x.numpy(), "image_size": hw.numpy()})
    assert boxes.shape[0] == 1 and boxes.shape[2] == 4 and labels.dtype == np.int64
    assert len(scores[0]) > 0 and (np.diff(scores[0]) <= 1e-6).all()
    assert labels.min() >= 1 and labels.max() <= 80
    # clipped to the valid 300 x 300 region (legacy: <= 299)
    assert boxes[0].max() <= 299 and (boxes[0] >= 0).all()


def test_zero_padding_client_gets_boxes_clipped_to_valid_size(det_repo: Path) -> None:
    """A gRPC client padding with 0 (not the mean pixel): clipping follows ``image_size`` alone."""
    from model_export.onnx.detection import photo_input

    sess = _session(det_repo)
    x, hw = photo_input("coffee", (300, 300), pad_value=0.0)  # 200 x 300 padded to 224 x 320
    assert x.shape == (1, 3, 224, 320) and hw.tolist() == [[200, 300]]
    assert float(x[0, :, 200:].abs().max()) == 0.0 and float(x[0, :, :, 300:].abs().max()) == 0.0
    for valid in ([200, 300], [150, 260]):
        boxes, scores, _ = sess.run(None, {"image": x.numpy(),
                                           "image_size": np.array([valid], np.int64)})
        b = boxes[0]
        assert len(b) > 0 and (b >= 0).all()
        # legacy inclusive corners: x2 <= w - 1, y2 <= h - 1
        assert b[:, 0::2].max() <= valid[1] - 1 and b[:, 1::2].max() <= valid[0] - 1
        # and boxes do reach the limit: the clipping, not the content, bounds them
        assert b[:, 2].max() == valid[1] - 1 or b[:, 3].max() == valid[0] - 1
    # an oversized image_size is limited to the padded input
    boxes, _, _ = sess.run(None, {"image": x.numpy(), "image_size": np.array([[9999, 9999]])})
    assert boxes[0][:, 0::2].max() <= 319 and boxes[0][:, 1::2].max() <= 223


def test_graph_matches_torch_with_zero_padding(det_export) -> None:
    import torch

    from model_export.onnx.detection import match_detections, photo_input

    x, hw = photo_input("rocket", (256, 384), pad_value=0.0)
    with torch.no_grad():
        ref = tuple(t.numpy() for t in det_export.model(x, hw))
    got = tuple(o[0] for o in _session(det_export.entry.entry_dir.parent).run(
        None, {"image": x.numpy(), "image_size": hw.numpy()}))
    matched, score_err, _ = match_detections(ref, got)
    assert len(ref[0]) > 0 and matched >= 0.95 * len(ref[0]) and score_err < 1e-3


def test_models_lists_the_detector(detector_url: str) -> None:
    body = httpx.get(f"{detector_url}/v1/models").json()
    (model,) = [m for m in body["models"] if m["name"] == MODEL_NAME]
    assert model["task"] == "detection" and model["random_init"] is True


def test_detect_boxes_in_original_pixels(detector_url: str) -> None:
    img = photo("coffee")  # 400 x 600
    r = _detect(detector_url, img)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image_size"] == [600, 400] and body["random_init"] is True
    assert body["options"]["network_inputs"] == [[320, 480]]
    dets = body["detections"]
    assert 0 < len(dets) <= 100
    b = np.array([d["box"] for d in dets])
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 600).all() and (b[:, 3] <= 400).all()
    assert (b[:, 2] > b[:, 0]).all()
    # boxes reach beyond the 480x320 network frame: they were mapped back to the original
    assert b[:, 2].max() > 480 or b[:, 3].max() > 320
    assert all(d["label"] != "__background__" and d["score"] > 0.05 for d in dets)
    assert [d["score"] for d in dets] == sorted((d["score"] for d in dets), reverse=True)


def test_flipped_image_gives_mirrored_boxes(detector_url: str) -> None:
    img = photo("chelsea")[:, :450]
    # With flip TTA both requests run the same two network inputs, so results must mirror.
    a = _detect(detector_url, img, flip=True).json()["detections"]
    b = _detect(detector_url, np.ascontiguousarray(img[:, ::-1]), flip=True).json()["detections"]
    assert len(a) == len(b) > 0
    w = img.shape[1]
    ba = np.array([d["box"] for d in a])
    bb = np.array([d["box"] for d in b])
    mirrored = np.stack([w - bb[:, 2], bb[:, 1], w - bb[:, 0], bb[:, 3]], 1)
    order_a = np.lexsort(ba.T[::-1])
    order_b = np.lexsort(mirrored.T[::-1])
    np.testing.assert_allclose(ba[order_a], mirrored[order_b], atol=0.02)


def test_rescaled_copy_gives_scaled_boxes(detector_url: str) -> None:
    from service.imaging.resize import resize_image

    small = resize_image(photo("astronaut"), (320, 320))  # exactly the network size
    big = np.repeat(np.repeat(small, 2, 0), 2, 1)  # 640 x 640: resized back bit-exactly
    a = _detect(detector_url, small).json()["detections"]
    b = _detect(detector_url, big).json()["detections"]
    assert len(a) == len(b) > 0
    ba = np.array([d["box"] for d in a])
    bb = np.array([d["box"] for d in b])
    # legacy inclusive corners: x2 maps as 2*x2_net + 1 vs 2*(x2_net + 1): within 1 px
    assert np.abs(bb - 2 * ba).max() <= 1.01
    assert [d["label"] for d in a] == [d["label"] for d in b]


def test_options_filter_and_json_body(detector_url: str) -> None:
    import base64

    img = photo("rocket")
    payload = {"image": base64.b64encode(encode_png(img)).decode(), "max_detections": 5,
               "score_threshold": 0.1, "classes": ["cat", "tv", 1]}
    r = httpx.post(f"{detector_url}/detect", json=payload, timeout=300)
    assert r.status_code == 200, r.text
    dets = r.json()["detections"]
    assert len(dets) <= 5
    assert all(d["label"] in ("cat", "tv", "person") and d["score"] > 0.1 for d in dets)


@pytest.mark.parametrize("options,status", [
    ({"score_threshold": 2}, 422), ({"classes": ["unicorn"]}, 422), ({"scales": [0]}, 422),
    ({"merge": "vote"}, 422), ({"bogus": 1}, 422), ({"model": "nope"}, 404),
])
def test_bad_options_are_4xx(detector_url: str, options: dict, status: int) -> None:
    r = _detect(detector_url, np.zeros((64, 64, 3), np.uint8), **options)
    assert r.status_code == status, r.text
    assert "error" in r.json()


def test_not_an_image_is_4xx(detector_url: str) -> None:
    r = httpx.post(f"{detector_url}/detect", content=b"hello", headers={"content-type": "image/png"})
    assert 400 <= r.status_code < 500
