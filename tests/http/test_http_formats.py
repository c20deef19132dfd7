"""Output formats that fit the ecosystem, over real HTTP: COCO boxes and results files, the
graph's detection cap, segmentation polygons and Cityscapes label ids per class, COCO keypoint
triplets and the documented landmark scores."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from tests.helpers import encode_png, noise_png, photo_png, read_png


def _post(url: str, path: str, png: bytes, **fields) -> httpx.Response:
    return httpx.post(f"{url}{path}", json={"image": base64.b64encode(png).decode(), **fields},
                      timeout=120)


def test_detection_coco_boxes_and_results_file(fake_detector_url):
    r = _post(fake_detector_url, "/detect", noise_png(64, 48), coco_results=True, image_id=42)
    assert r.status_code == 200, r.text
    body = r.json()
    for d in body["detections"]:
        x1, y1, x2, y2 = d["box"]
        assert d["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    # The fake detector's labels have no category ids: nothing to put into a results file.
    assert body["coco_results"] == []
    plain = _post(fake_detector_url, "/detect", noise_png(64, 48)).json()
    assert plain["coco_results"] is None


def test_detection_results_file_with_category_ids(detector_url):
    r = _post(detector_url, "/detect", photo_png((320, 240), "astronaut"), coco_results=True,
              image_id=7, score_threshold=0.0)
    assert r.status_code == 200, r.text
    body = r.json()
    dets, coco = body["detections"], body["coco_results"]
    assert dets and len(coco) == len(dets)
    for d, c in zip(dets, coco):
        assert c == {"image_id": 7, "category_id": d["category_id"], "bbox": d["bbox"],
                     "score": d["score"]}


def test_max_detections_up_to_the_graph_cap(fake_detector_url):
    info = httpx.get(f"{fake_detector_url}/v1/models/fake_det").json()
    cap = info["limits"]["max_detections"]
    assert cap == 100 == info["protocol"]["max_detections"]
    ok = _post(fake_detector_url, "/detect", noise_png(64, 48), max_detections=cap)
    assert ok.status_code == 200 and ok.json()["options"]["max_detections"] == cap
    r = _post(fake_detector_url, "/detect", noise_png(64, 48), max_detections=cap + 1)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_options" and "max_detections" in err["message"]
    assert str(cap) in err["message"]
    one = _post(fake_detector_url, "/detect", noise_png(64, 48), max_detections=1).json()
    assert len(one["detections"]) == 1


def test_segmentation_label_ids_and_polygons(gateway_url):
    r = _post(gateway_url, "/segment", photo_png((96, 64)), model="seg_cityscapes",
              polygons=True, polygon_tolerance=0, rle=True)
    assert r.status_code == 200, r.text
    body = r.json()
    labels = read_png(body["label_map"]["data"])
    from model_export.datasets import get_dataset

    train_to_id = get_dataset("cityscapes").label_ids
    for c in body["classes"]:
        assert c["label_id"] == train_to_id[c["id"]]
        mask = labels == c["id"]
        assert c["pixels"] == int(mask.sum())
        # Every polygon vertex is the centre of a pixel of that class.
        for region in c["polygons"]:
            pts = np.array(region["exterior"])
            assert pts.shape[1] == 2 and len(pts) >= 3
            xs, ys = (pts[:, 0] - 0.5).astype(int), (pts[:, 1] - 0.5).astype(int)
            assert mask[ys, xs].all()
    # The polygons cover the class: filling them back (holes cut out) gives the mask, up to the
    # regions too thin to have one.
    import cv2

    for c in body["classes"]:
        fill = np.zeros(labels.shape, np.uint8)
        for region in c["polygons"]:
            cv2.fillPoly(fill, [np.rint(np.array(region["exterior"]) - 0.5).astype(np.int32)], 1)
            for hole in region["holes"]:
                cv2.fillPoly(fill, [np.rint(np.array(hole) - 0.5).astype(np.int32)], 0)
        agree = (fill.astype(bool) == (labels == c["id"])).mean()
        assert agree > 0.97, (c["name"], agree)


def test_segmentation_polygons_of_known_shapes():
    from service.imaging.encode import class_polygons

    labels = np.zeros((40, 60), np.uint8)
    labels[5:25, 10:40] = 1  # a rectangle with a hole
    labels[10:15, 20:25] = 0
    labels[30:35, 45:55] = 1  # a second region
    regions = class_polygons(labels, 1, tolerance=0)
    assert len(regions) == 2
    big = max(regions, key=lambda r: len(r["holes"]))
    assert len(big["holes"]) == 1
    ext = np.array(big["exterior"])
    assert ext.min(0).tolist() == [10.5, 5.5] and ext.max(0).tolist() == [39.5, 24.5]
    assert class_polygons(labels, 2) == []


def test_landmark_keypoints_and_scores(gateway_url):
    r = _post(gateway_url, "/landmarks", photo_png((128, 128), "astronaut"),
              faces=[[20, 10, 100, 110]], coco_keypoints=True)
    assert r.status_code == 200, r.text
    face = r.json()["faces"][0]
    conf, scores = np.array(face["confidence"]), np.array(face["scores"])
    np.testing.assert_allclose(scores, np.clip(conf, 0, 1), atol=1e-6)
    assert face["score"] == pytest.approx(scores.mean(), abs=1e-5)
    kp = np.array(face["keypoints"]).reshape(-1, 3)
    np.testing.assert_allclose(kp[:, :2], face["landmarks"], atol=1e-3)
    np.testing.assert_allclose(kp[:, 2], scores, atol=1e-4)
    plain = _post(gateway_url, "/landmarks", photo_png((128, 128), "astronaut")).json()
    assert plain["faces"][0]["keypoints"] is None


def test_landmark_confidence_is_documented(gateway_url):
    spec = httpx.get(f"{gateway_url}/openapi.json").json()
    face = spec["components"]["schemas"]["FaceResult"]["properties"]
    assert "peak" in face["confidence"]["description"]
    assert "not a probability" in face["confidence"]["description"].lower()
    assert "clipped" in face["scores"]["description"]


def test_overlay_png_of_every_task(gateway_url, fake_detector_url):
    png = photo_png((160, 120))
    seg = _post(gateway_url, "/segment", png, overlay=True, overlay_format="png").json()
    lm = _post(gateway_url, "/landmarks", png, overlay=True, overlay_format="png",
               faces=[[40, 20, 120, 100]]).json()
    det = _post(fake_detector_url, "/detect", encode_png(np.full((120, 160, 3), 128, np.uint8)),
                overlay=True, overlay_format="png").json()
    for body in (seg, lm, det):
        assert read_png(body["overlay"]["data"]).shape == (120, 160, 3)
