"""One exporter per task: the registry covers every dataset task, options belong to their task,
defaults stay the documented ones, detection archs go by their own names."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_export.archs import build_model, list_archs
from model_export.cli import EXIT_FAILED, TASK_OPTIONS, main
from model_export.datasets import DATASETS
from model_export.errors import ExportError
from model_export.exporters import (
    EXPORTERS,
    DetectionExport,
    FaceDetectionExport,
    LandmarkExport,
    SegmentationExport,
    exporter_for,
)
from model_export.pipeline import ExportRequest, export_model
from model_export.repository import TritonOptions

OPTIONS = {"segmentation": SegmentationExport, "landmarks": LandmarkExport,
           "detection": DetectionExport, "face_detection": FaceDetectionExport}
ARCHS = {"segmentation": "hrnetv2_w18_small_v1", "landmarks": "hrnetv2_w18",
         "detection": "hrnetv2p_w18"}
DATASET = {"segmentation": "cityscapes", "landmarks": "300w", "detection": "coco"}


def test_every_dataset_task_has_an_exporter() -> None:
    tasks = {d.task for d in DATASETS.values()}
    assert tasks == set(EXPORTERS) == set(TASK_OPTIONS) == set(OPTIONS)
    for task, exporter in EXPORTERS.items():
        assert exporter.task == task and exporter_for(task) is exporter
        assert exporter.options_type is OPTIONS[task]
        assert list_archs(task)  # and the registry builds networks for it
    with pytest.raises(ExportError, match="segmentation, landmarks, detection, face_detection"):
        exporter_for("depth")


def test_options_default_to_the_tasks_defaults() -> None:
    for task, exporter in EXPORTERS.items():
        assert exporter.options(None) == OPTIONS[task]()
    seg = SegmentationExport()
    assert (seg.base_size, seg.crop_size, seg.align_corners, seg.max_batch_size) == (None, None, None, 8)
    assert seg.trace_size == (192, 320) and tuple(seg.parity_sizes) == ((256, 512), (250, 375))
    assert seg.parity_batches == (1, 2)
    face = LandmarkExport()
    assert (face.align_corners, face.max_batch_size, face.parity_batches) == (None, 8, (1, 2))
    det = DetectionExport()
    assert (det.max_size, dict(det.overrides), det.trace_size) == (None, {}, (320, 480))
    assert tuple(det.parity_sizes) == ((320, 480), (480, 320))
    assert tuple(det.parity_images) == ("coffee", "chelsea", "astronaut", "rocket")
    req = ExportRequest(task="segmentation", arch=None, dataset="cityscapes", name="x", repo=Path("r"))
    assert req.options is None and req.opset == 18 and req.overwrite and not req.tensorrt_plan
    assert req.triton == TritonOptions()
    assert (req.triton.instance_kind, req.triton.instance_count, req.triton.warmup) == ("gpu", 1, "zero")
    assert req.triton.max_queue_delay_microseconds == 2000 and not req.triton.tensorrt_fp16


@pytest.mark.parametrize("task,options", [
    ("segmentation", DetectionExport()),
    ("segmentation", LandmarkExport()),
    ("landmarks", SegmentationExport()),
    ("detection", SegmentationExport(base_size=512)),
])
def test_options_of_another_task_are_an_export_error(task: str, options: object,
                                                     tmp_path: Path) -> None:
    req = ExportRequest(task=task, arch=ARCHS[task], dataset=DATASET[task], name="x",
                        repo=tmp_path, random_init=True, options=options)  # type: ignore[arg-type]
    with pytest.raises(ExportError, match=f"{task} export takes {OPTIONS[task].__name__} options, "
                                          f"not {type(options).__name__}"):
        export_model(req, log=lambda _m: None)
    assert not list(tmp_path.iterdir())


def test_detection_parity_without_photos_is_an_export_error(tmp_path: Path) -> None:
    req = ExportRequest(task="detection", arch="hrnetv2p_w18", dataset="coco", name="det",
                        repo=tmp_path, random_init=True, options=DetectionExport(parity_images=()))
    with pytest.raises(ExportError, match="detection parity needs at least one photo"):
        export_model(req, log=lambda _m: None)
    assert not list(tmp_path.iterdir())


def test_hrnetv2_is_not_a_detection_arch(tmp_path: Path, capsys) -> None:
    """Detection archs have their own names: the backbone's name fails, naming the right one."""
    with pytest.raises(ValueError, match="hrnetv2p_w18"):
        build_model("detection", "hrnetv2_w18", 81)
    req = ExportRequest(task="detection", arch="hrnetv2_w18", dataset="coco", name="det",
                        repo=tmp_path, random_init=True)
    with pytest.raises(ValueError, match="unknown arch 'hrnetv2_w18' for task 'detection'; "
                                         "valid: hrnetv2p_w18, hrnetv2p_w32"):
        export_model(req, log=lambda _m: None)
    code = main(["export", "--task", "detection", "--arch", "hrnetv2_w18", "--dataset", "coco",
                 "--random-init", "--name", "det", "--repo", str(tmp_path)])
    assert code == EXIT_FAILED and "hrnetv2p_w18" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
