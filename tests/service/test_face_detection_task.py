"""The face-detection task (service/tasks/face_detection/) and /landmarks' faces=auto, with the
session's converted BlazeFace full-range model on real photos, through the embedded backend.

Acceptance: on real photos (scikit-image's astronaut and cameraman, matplotlib's Grace Hopper,
and a multi-face photo composed of the three) every detected box overlaps a hand-checked box
(tests/helpers.py: ``FACE_BOXES``) with IoU >= 0.5, one detection per person; landmarks without
boxes answer one face per person.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import ModelNotFound, Unprocessable
from service.runtime.backends.embedded import EmbeddedBackend
from service.runtime.runner import InferenceRunner
from service.tasks import face_detection, landmarks
from service.tasks.face_detection.merge import anchor_centres, decode, weighted_nms
from service.tasks.face_detection.plan import EDGE_MARGIN, Tile, tiles
from service.tasks.face_detection.schemas import FaceDetectOptions
from service.tasks.landmarks.geometry import box_to_face
from service.tasks.landmarks.schemas import LandmarkOptions
from tests.conftest import FACE_300W, FACE_DET_MODEL
from tests.helpers import (
    FACE_BOXES, box_iou, face_photo, group_photo, limits, repo_settings, run_task_directly,
)


class BatchLog:
    """Runner observer: the batch sizes of each model's backend calls."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, int]] = []

    def batch(self, model: str, passes: int) -> None:
        self.batches.append((model, passes))

    def occupancy(self, waiting: int, running: int) -> None:
        pass


@pytest.fixture(scope="module")
def served(faces_repo: Path) -> Any:
    """``(models, runner, log)``: the embedded backend over ``faces_repo`` in a private loop."""
    loop = asyncio.new_event_loop()
    settings = repo_settings(faces_repo)
    backend = EmbeddedBackend(settings)
    loop.run_until_complete(backend.start())
    log = BatchLog()
    runner = InferenceRunner(backend, settings, log)
    models = loop.run_until_complete(backend.models())
    yield loop, models, runner, log
    loop.run_until_complete(backend.close())
    loop.close()


def faces(served: Any, image: np.ndarray, **options: Any) -> Any:
    loop, models, runner, _ = served
    return loop.run_until_complete(run_task_directly(
        face_detection.TASK, image, models[FACE_DET_MODEL], runner, FaceDetectOptions(**options)))


def marks(served: Any, image: np.ndarray, faces_field: Any = None, *, limit_faces: int = 32,
          with_detector: bool = True, **options: Any) -> Any:
    loop, models, runner, _ = served
    known = models if with_detector else {FACE_300W: models[FACE_300W]}
    extras = {} if faces_field is None else {"faces": faces_field}
    return loop.run_until_complete(run_task_directly(
        landmarks.TASK, image, models[FACE_300W], runner, LandmarkOptions(**options),
        extras=extras, models=known, limits=limits(max_faces=limit_faces)))


# ------------------------------------------------------------------------------ geometry


def test_level_one_is_mediapipes_letterbox() -> None:
    (t,) = tiles(960, 360, (1,), (192, 192))
    assert t.region == (0, 0, 960, 360) and t.resized == (72, 192) and t.offset == (0, 60)
    assert t.cut_edges == (False, False, False, False)
    # The input square's corners and centre map back onto the image's.
    pts = t.to_image(np.array([[0.0, 60 / 192], [1.0, 132 / 192], [0.5, 0.5]]), (192, 192))
    np.testing.assert_allclose(pts, [[0, 0], [960, 360], [480, 180]], atol=1e-9)


def test_tiles_hold_every_small_face_clear_of_their_cut_edges() -> None:
    """Level k: every face up to 3/8 of the tile side lies in some tile with the edge margin on
    every side that is inside the image, wherever it is in the image."""
    rng = np.random.default_rng(0)
    for width, height, k in [(960, 360, 2), (1024, 1112, 2), (512, 512, 3), (2000, 700, 4)]:
        grid = [t for t in tiles(width, height, (k,), (192, 192))]
        side = max(width, height) / k
        assert all(t.level == k for t in grid)
        for _ in range(300):
            f = rng.uniform(8, 3 * side / 8)
            x, y = rng.uniform(0, width - f), rng.uniform(0, height - f)
            box = np.array([[x, y, x + f, y + f]])
            assert any(_clear(t, box) for t in grid), (width, height, k, box)


def _clear(t: Tile, box: np.ndarray) -> bool:
    from service.tasks.face_detection.merge import _uncut

    x0, y0, x1, y1 = t.region
    inside = box[0, 0] >= x0 and box[0, 1] >= y0 and box[0, 2] <= x1 and box[0, 3] <= y1
    return bool(inside and _uncut(t, box)[0])


def test_small_images_skip_levels_of_upsampled_tiles() -> None:
    assert [t.level for t in tiles(150, 150, (1, 2), (192, 192))] == [1]
    assert EDGE_MARGIN == 1 / 16


# ------------------------------------------------------------------------------ decoding


def test_anchors_and_decoding_are_mediapipes(face_det_export: Any) -> None:
    """The gateway's vectorised anchors, decoding and weighted NMS equal the plain transcription
    of MediaPipe's calculators (model_export's parity reference) on the detector's real output."""
    import onnxruntime as ort

    from model_export.mediapipe import VARIANTS
    from model_export.onnx.face_detection import (
        _anchor_centres, letterbox_square, mediapipe_detections,
    )

    for v in VARIANTS.values():
        proto = v.protocol()
        np.testing.assert_array_equal(anchor_centres(proto), _anchor_centres(proto))
        assert len(anchor_centres(proto)) == v.num_anchors
    proto = face_det_export.metadata.face_detection
    session = ort.InferenceSession(str(face_det_export.entry.model_file))
    image, _ = group_photo()
    for img in (image, face_photo("camera")):
        x = letterbox_square(img, 192).transpose(2, 0, 1)[None]
        reg, logits = session.run(["regressors", "classificators"], {"image": x})
        boxes, scores, kp = decode(reg[0], logits[0], proto, proto.score_threshold)
        got = weighted_nms(boxes, scores, kp, proto.nms_iou)
        ref = mediapipe_detections(reg[0], logits[0], proto)
        assert len(got) == len(ref) > 0
        for i, (values, score) in enumerate(ref):
            np.testing.assert_allclose(got.boxes[i], values[:4], atol=1e-9)
            np.testing.assert_allclose(got.keypoints[i].ravel(), values[4:], atol=1e-9)
            assert got.scores[i] == pytest.approx(score, abs=1e-12)


# ------------------------------------------------------------------------------ real photos


@pytest.mark.parametrize("name", ["astronaut", "camera", "grace_hopper"])
def test_one_face_per_portrait(served: Any, name: str) -> None:
    res = faces(served, face_photo(name))
    assert len(res.faces) == 1, [f.box for f in res.faces]
    face = res.faces[0]
    assert box_iou(face.box, FACE_BOXES[name]) >= 0.5, (face.box, FACE_BOXES[name])
    assert 0.6 <= face.score <= 1.0
    kp = dict(zip(res.keypoint_names, np.asarray(face.keypoints)))
    x1, y1, x2, y2 = face.box
    for part in ("right_eye", "left_eye", "nose_tip", "mouth_center"):
        assert x1 <= kp[part][0] <= x2 and y1 <= kp[part][1] <= y2, part
    # The subject's right eye is on the image's left; eyes above the nose, the nose above the mouth.
    assert kp["right_eye"][0] < kp["left_eye"][0]
    assert max(kp["right_eye"][1], kp["left_eye"][1]) < kp["mouth_center"][1]
    assert kp["nose_tip"][1] < kp["mouth_center"][1]
    assert res.options["tiles"] == [1, 2] and res.options["passes"] == 10  # 1 + 3 x 3 tiles


def test_group_photo_one_face_per_person(served: Any) -> None:
    """The three faces, each matching its own hand-checked box; level 1 alone (MediaPipe's single
    pass) misses the cameraman's small, half-hidden face, the half-tiles find it."""
    image, hand = group_photo()
    res = faces(served, image)
    assert res.options["passes"] == 4  # the whole photo and three 480x360 tiles, one batch
    assert len(res.faces) == 3
    found = sorted(res.faces, key=lambda f: f.box[0])
    ious = [box_iou(f.box, h) for f, h in zip(found, hand)]
    assert min(ious) >= 0.5, ious
    assert [f.index for f in res.faces] == [0, 1, 2]
    assert res.faces[0].score >= res.faces[1].score >= res.faces[2].score
    single = faces(served, image, tiles=[1])
    assert single.options["passes"] == 1 and len(single.faces) == 2
    assert all(max(box_iou(f.box, h) for h in hand) >= 0.5 for f in single.faces)


def test_no_face_in_a_photo_without_people(served: Any) -> None:
    assert faces(served, face_photo("coffee")).faces == []
    assert faces(served, face_photo("chelsea")).faces == []  # a cat


def test_threshold_and_most_faces(served: Any) -> None:
    image, _ = group_photo()
    every = faces(served, image, score_threshold=0.0 + 0.6)
    best = faces(served, image, max_faces=1)
    assert len(best.faces) == 1 and best.faces[0].box == every.faces[0].box
    strict = faces(served, image, score_threshold=0.9)
    assert 0 < len(strict.faces) < len(every.faces)
    assert all(f.score >= 0.9 for f in strict.faces)
    with pytest.raises(Unprocessable) as exc:
        faces(served, image, max_faces=33)
    assert exc.value.code == "too_many_faces"


# ------------------------------------------------------------------------------ /landmarks auto


def test_landmarks_without_boxes_detect_one_face_per_person(served: Any) -> None:
    _, models, _, log = served
    image, hand = group_photo()
    log.batches.clear()
    res = marks(served, image)
    assert res.faces_source == "detected" and res.face_model.name == FACE_DET_MODEL
    assert len(res.faces) == 3
    detected = faces(served, image)
    for face, det in zip(res.faces, detected.faces):
        assert face.detection == det and face.box == det.box
        # The official box rule with the documented enlargement (answer boxes are rounded to 1e-3).
        expect = box_to_face(det.box, 1.25)
        assert face.center == pytest.approx(list(expect.center), abs=1e-3)
        assert face.scale == pytest.approx(expect.scale, abs=1e-5)
        assert len(face.landmarks) == 68
        x1, y1, x2, y2 = face.crop_box
        pts = np.asarray(face.landmarks)
        assert (pts[:, 0] >= x1).all() and (pts[:, 0] <= x2).all()
    assert min(max(box_iou(f.box, h) for h in hand) for f in res.faces) >= 0.5
    # One detector batch (4 tiles), then all faces' crops as one landmark batch.
    assert log.batches[:2] == [(FACE_DET_MODEL, 4), (FACE_300W, 3)]
    assert res.options["min_face_score"] == 0.6 and res.options["face_tiles"] == [1, 2]
    assert "face_detection" in res.timings_ms


def test_landmarks_detector_options(served: Any) -> None:
    image, _ = group_photo()
    assert len(marks(served, image, max_faces=1).faces) == 1
    assert len(marks(served, image, min_face_score=0.9).faces) == 2
    assert len(marks(served, image, "auto", max_faces=2).faces) == 2
    with pytest.raises(Unprocessable):
        marks(served, image, max_faces=40)


def test_whole_image_on_request_and_without_a_detector(served: Any) -> None:
    image = face_photo("astronaut")
    res = marks(served, image, "whole_image")
    assert res.faces_source == "whole_image" and len(res.faces) == 1
    assert res.faces[0].crop_box == [0.0, 0.0, 512.0, 512.0] and res.face_model is None
    empty = marks(served, image, [])  # an empty list of faces: the whole image, as always
    assert empty.faces_source == "whole_image" and empty.faces[0].landmarks == res.faces[0].landmarks
    fallback = marks(served, image, with_detector=False)
    assert fallback.faces_source == "whole_image" and fallback.faces[0].landmarks == res.faces[0].landmarks
    with pytest.raises(ModelNotFound):
        marks(served, image, "auto", with_detector=False)
    with pytest.raises(Unprocessable) as exc:
        marks(served, image, "everyone")
    assert exc.value.code == "invalid_face"


def test_landmarks_when_no_face_is_found(served: Any) -> None:
    res = marks(served, face_photo("coffee"), overlay=True)
    assert res.faces_source == "detected" and res.faces == [] and res.overlay is not None
