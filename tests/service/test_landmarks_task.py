"""The landmarks task (service/tasks/landmarks.py): faces, batching, flip TTA, overlay, the real
exported random-init 300W model on skimage's astronaut photo."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest
from PIL import Image

from service.errors import ServiceError
from service.tasks.landmarks.geometry import Face, crop_face
from service.contract import (
    ExportInfo,
    LandmarkProtocol,
    LandmarkMetadata,
    ModelMetadata,
    TensorSpec,
    WeightsInfo,
)
from service.settings import Settings
from service.tasks import landmarks
from service.tasks.landmarks.schemas import FaceSpec, LandmarkOptions
from tests.helpers import limits, run_task_directly

K = 6


def fake_meta(flip_pairs=((0, 1),), random_init=True) -> ModelMetadata:
    return LandmarkMetadata(
        name="fake_face", task="landmarks", arch="fake", dataset="300w",
        labels=[f"p{i}" for i in range(K)], flip_pairs=list(flip_pairs), align_corners=False,
        inputs=[TensorSpec(name="image", dtype="FP32", dims=[3, 256, 256])],
        outputs=[TensorSpec(name="heatmaps", dtype="FP32", dims=[K, 64, 64])],
        max_batch_size=8, landmarks=LandmarkProtocol(),
        weights=WeightsInfo(random_init=random_init, origin="random-init", format="none"),
        export=ExportInfo(model_export_version="0", torch="0", onnx="0", opset=18, exported_at="now"),
    )


class BrightnessRunner:
    """A stand-in network: every heatmap is the 4x4-average of the crop's red channel, so each
    landmark lands on the brightest spot of the crop. Records its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def run(self, meta, passes, *, timings=None, deadline=None):
        self.calls.append(len(passes))
        out = []
        for inputs in passes:
            assert set(inputs) == {"image"}
            p = inputs["image"]
            assert p.shape == (3, 256, 256) and p.dtype == np.float32
            pooled = p[0].reshape(64, 4, 64, 4).mean(axis=(1, 3))
            out.append({"heatmaps": np.repeat(pooled[None], K, axis=0) / 255.0})
        return out


def blob_image(points, h=400, w=500, sigma=5.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    img = np.zeros((h, w), np.float64)
    for px, py in points:
        img = np.maximum(img, np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * sigma**2)))
    return np.repeat((img * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def run_landmarks(image, meta, runner, faces, options, *, max_faces):
    return run_task_directly(landmarks.TASK, image, meta, runner, options, extras={"faces": faces},
                             limits=limits(max_faces=max_faces))


def run(image, faces, options=None, runner=None, meta=None, max_faces=8):
    runner = runner or BrightnessRunner()
    return asyncio.run(
        run_landmarks(image, meta or fake_meta(), runner, faces, options or LandmarkOptions(), max_faces=max_faces)
    )


def test_point_found_through_crop_and_decode():
    img = blob_image([(180.4, 150.6)])
    res = run(img, [FaceSpec(box=[120, 90, 260, 230])])
    face = res.faces[0]
    assert face.center == [190.0, 160.0] and face.scale == pytest.approx(140 / 200 * 1.25)
    pts = np.array(face.landmarks)
    assert pts.shape == (K, 2)
    # Heatmap cells are 175/64 = 2.7 image px: the decode lands within about one cell.
    assert np.hypot(*(pts[0] - [180.4, 150.6])) < 2.8
    assert res.labels == [f"p{i}" for i in range(K)] and res.random_init is True
    assert res.faces_source == "request" and res.image_size == [500, 400]
    assert set(res.timings_ms) >= {"preprocess", "postprocess"}


def test_batch_of_two_faces_equals_single_requests():
    img = blob_image([(100.0, 100.0), (380.0, 300.0)])
    boxes = [[60, 60, 140, 140], [330, 250, 430, 350]]
    runner = BrightnessRunner()
    both = run(img, [FaceSpec(box=b) for b in boxes], runner=runner)
    assert runner.calls == [2]  # one runner call with both passes
    for i, b in enumerate(boxes):
        single = run(img, [FaceSpec(box=b)])
        assert single.faces[0].landmarks == both.faces[i].landmarks
        assert single.faces[0].confidence == both.faces[i].confidence
    assert np.hypot(*(np.array(both.faces[1].landmarks[0]) - [380, 300])) < 2.0


def test_whole_image_when_no_faces():
    img = blob_image([(200.0, 120.0)], h=256, w=256)
    res = run(img, None)
    assert res.faces_source == "whole_image"
    assert res.faces[0].center == [128.0, 128.0] and res.faces[0].scale == pytest.approx(1.28)
    assert res.faces[0].crop_box == [0.0, 0.0, 256.0, 256.0]
    assert np.hypot(*(np.array(res.faces[0].landmarks[0]) - [200, 120])) < 2.0


def test_center_scale_face_used_as_given():
    img = blob_image([(250.0, 200.0)])
    res = run(img, [FaceSpec(center=[240.0, 210.0], scale=0.8)])
    assert res.faces[0].center == [240.0, 210.0] and res.faces[0].scale == 0.8
    assert res.faces[0].box is None
    assert np.hypot(*(np.array(res.faces[0].landmarks[0]) - [250, 200])) < 1.5


def test_box_enlarge_option_changes_scale():
    img = blob_image([(250.0, 200.0)])
    res = run(img, [FaceSpec(box=[200, 150, 300, 250])], LandmarkOptions(box_enlarge=2.0))
    assert res.faces[0].scale == pytest.approx(1.0)
    assert res.options["box_enlarge"] == 2.0


def test_flip_tta_consistent_for_a_mirror_equivariant_network():
    """For a network that commutes with mirroring and identical channels, flip TTA changes nothing
    (the flipped pass, flipped back and pair-swapped, equals the plain one)."""
    img = blob_image([(210.0, 160.0)])
    face = [FaceSpec(box=[150, 100, 270, 220])]
    runner = BrightnessRunner()
    plain = run(img, face)
    flipped = run(img, face, LandmarkOptions(flip=True), runner=runner)
    assert runner.calls == [2]
    assert flipped.options["flip"] is True
    np.testing.assert_allclose(flipped.faces[0].landmarks, plain.faces[0].landmarks, atol=1e-6)


def test_flip_needs_flip_pairs():
    with pytest.raises(ServiceError) as info:
        run(blob_image([(10, 10)]), None, LandmarkOptions(flip=True), meta=fake_meta(flip_pairs=()))
    assert info.value.status_code == 422 and "flip" in info.value.message


@pytest.mark.parametrize(
    "faces,words",
    [
        ([FaceSpec(box=[10, 10, 10, 50])], "degenerate"),
        ([FaceSpec(box=[50, 10, 20, 60])], "degenerate"),
        ([FaceSpec(box=[600, 500, 700, 600])], "outside"),
        ([FaceSpec(center=[-500.0, 100.0], scale=0.5)], "outside"),
        ([FaceSpec(center=[100.0, 100.0], scale=-1.0)], "scale"),
        ([FaceSpec(center=[100.0, 100.0], scale=1e6)], "long side"),
        ([FaceSpec(box=[0, 0, float("nan"), 5])], "finite"),
        ([FaceSpec(box=[0, 0, 10, 10])] * 9, "too many faces"),
    ],
)
def test_bad_faces_rejected(faces, words):
    with pytest.raises(ServiceError) as info:
        run(blob_image([(10, 10)]), faces)
    assert info.value.status_code == 422
    assert words in info.value.message


def test_face_spec_needs_one_form():
    with pytest.raises(ValueError):
        FaceSpec(box=[0, 0, 1, 1], center=[0, 0], scale=1)
    with pytest.raises(ValueError):
        FaceSpec(center=[0, 0])


def test_overlay_is_an_image_of_the_input_size():
    img = blob_image([(250.0, 200.0)])
    res = run(img, [FaceSpec(box=[200, 150, 300, 250])], LandmarkOptions(overlay=True, overlay_format="png"))
    assert res.overlay is not None and res.overlay.format == "png"
    im = Image.open(io.BytesIO(base64.b64decode(res.overlay.data)))
    assert im.size == (500, 400) and im.format == "PNG"
    arr = np.asarray(im.convert("RGB"))
    x, y = (int(v) for v in res.faces[0].landmarks[0])
    assert tuple(arr[y, x]) == (255, 0, 0)  # the point is drawn in red


# ---------------------------------------------------------------- the real exported model
@pytest.fixture(scope="module")
def face_runner(model_repo):
    from service.runtime.backends.embedded import EmbeddedBackend

    settings = Settings(repository=model_repo, max_batch=4, ort_intra_threads=1, ort_inter_threads=1)
    backend = EmbeddedBackend(settings)
    asyncio.run(backend.start())
    metas = asyncio.run(backend.models())
    yield metas["face_300w"], backend, settings
    asyncio.run(backend.close())


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


def _real(face_runner, image, faces, options=None):
    from service.runtime.runner import InferenceRunner

    meta, backend, settings = face_runner
    runner = InferenceRunner(backend, settings)
    return asyncio.run(
        run_landmarks(image, meta, runner, faces, options or LandmarkOptions(), max_faces=settings.max_faces)
    )


ASTRONAUT_FACE = [150, 40, 270, 190]


def test_real_model_on_astronaut(face_runner, astronaut):
    meta = face_runner[0]
    res = _real(face_runner, astronaut, [FaceSpec(box=ASTRONAUT_FACE)])
    assert res.random_init is True and res.model.random_init is True
    assert res.model.name == "face_300w" and len(res.labels) == 68 == len(meta.labels)
    face = res.faces[0]
    pts = np.array(face.landmarks)
    assert pts.shape == (68, 2) and np.isfinite(pts).all()
    assert len(face.confidence) == 68
    # Random weights: the points are anywhere in the crop square, but never outside it.
    x1, y1, x2, y2 = face.crop_box
    assert (pts[:, 0] >= x1).all() and (pts[:, 0] <= x2).all()
    assert (pts[:, 1] >= y1).all() and (pts[:, 1] <= y2).all()
    assert face.center == [210.0, 115.0] and face.scale == pytest.approx(150 / 200 * 1.25)
    # The points are not all the same (the heatmaps really were decoded per landmark).
    assert len({tuple(p) for p in pts.round(2)}) > 5


def test_real_model_batch_equals_single(face_runner, astronaut):
    boxes = [ASTRONAUT_FACE, [300, 250, 420, 400]]
    both = _real(face_runner, astronaut, [FaceSpec(box=b) for b in boxes])
    for i, b in enumerate(boxes):
        single = _real(face_runner, astronaut, [FaceSpec(box=b)])
        np.testing.assert_allclose(single.faces[0].landmarks, both.faces[i].landmarks, atol=1e-3)
        np.testing.assert_allclose(single.faces[0].confidence, both.faces[i].confidence, atol=1e-4)


def test_real_model_flip_tta(face_runner, astronaut):
    """Flip TTA = average of the plain heatmaps and the flipped-back, pair-swapped heatmaps of
    the mirrored crop; checked against running those two passes by hand."""
    from service.tasks.landmarks.geometry import decode_heatmaps, flip_back
    from service.runtime.runner import InferenceRunner

    meta, backend, settings = face_runner
    res = _real(face_runner, astronaut, [FaceSpec(box=ASTRONAUT_FACE)], LandmarkOptions(flip=True))
    assert res.options["flip"] is True
    face = Face((210.0, 115.0), 150 / 200 * 1.25)
    crop, _ = crop_face(astronaut, face)
    chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
    runner = InferenceRunner(backend, settings)
    outs = asyncio.run(runner.run(meta, [chw, np.ascontiguousarray(chw[:, :, ::-1])]))
    hm = (outs[0]["heatmaps"] + flip_back(outs[1]["heatmaps"], meta.flip_pairs)) / 2
    pts, conf = decode_heatmaps(hm[None], [face])
    np.testing.assert_allclose(res.faces[0].landmarks, pts[0], atol=1e-3)
    # Mirroring the image and the box mirrors the (flip-averaged) answer, with pairs swapped.
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    w = astronaut.shape[1]
    mbox = [w - ASTRONAUT_FACE[2], ASTRONAUT_FACE[1], w - ASTRONAUT_FACE[0], ASTRONAUT_FACE[3]]
    mres = _real(face_runner, mirrored, [FaceSpec(box=mbox)], LandmarkOptions(flip=True))
    a = np.array(res.faces[0].landmarks)
    b = np.array(mres.faces[0].landmarks)
    perm = np.arange(68)
    for i, j in meta.flip_pairs:
        perm[i], perm[j] = j, i
    b_back = np.stack([w - b[perm, 0], b[perm, 1]], axis=1)
    # Same heatmaps up to float noise; a quarter-cell shift can flip on near-ties, so compare
    # the median error (cells are 187.5/64 = 2.9 px).
    assert np.median(np.hypot(*(a - b_back).T)) < 0.05
