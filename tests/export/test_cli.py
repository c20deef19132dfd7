"""The ``python -m model_export`` CLI: help, listings, inspect, export (in-process but one call)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_export.checkpoints.reading import file_sha256
from model_export.cli import EXIT_FAILED, main
from model_export.errors import ExportError
from model_export.pipeline import ExportRequest, export_model
from model_export.repository import metadata_from_config, read_config
from tests.conftest import SEG_CITYSCAPES
from tests.helpers import official_seg_checkpoint, save_checkpoint, to_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--trace-size", "64x96", "--parity-sizes", "48x80", "40x56", "--parity-batches", "1", "2"]


def test_help_runs_without_torch() -> None:
    # The one subprocess: --help must work and must not pay for importing torch.
    code = (
        "import sys, runpy; sys.argv = ['model_export', '--help'];\n"
        "try:\n    runpy.run_module('model_export', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'torch' not in sys.modules, 'help imported torch'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("export", "inspect", "list-archs", "list-datasets", "demo"):
        assert command in out.stdout


def test_export_help_lists_options(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--checkpoint", "--random-init", "--align-corners", "--no-align-corners", "--crop-size",
                "--tensorrt-accelerator", "--tensorrt-plan", "--instance-kind", "--parity-sizes", "--opset",
                "--precision", "--tensorrt-precision", "--engine", "--calibration-images",
                "--precision-images", "--min-label-agreement", "--max-nme"):
        assert opt in text


def test_export_requires_a_weight_source(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["export", "--task", "segmentation", "--arch", "hrnetv2_w18", "--dataset", "lip", "--name", "x"])
    assert exc.value.code == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_listings(capsys) -> None:
    assert main(["list-datasets"]) == 0
    out = capsys.readouterr().out
    assert "cityscapes" in out and "pascal_context_60" in out and "wflw" in out and "2048" in out
    (coco,) = [line for line in out.splitlines() if line.startswith("coco ")]
    assert "detection" in coco and "81 outputs" in coco and "1333x800" in coco and "pad to 32" in coco
    assert main(["list-archs", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "hrnetv2_w18_small_v1" in out and "hrnetv2_w48" in out
    assert main(["list-archs"]) == 0
    (det,) = [line for line in capsys.readouterr().out.splitlines() if line.startswith("detection:")]
    assert "hrnetv2p_w18, hrnetv2p_w32, hrnetv2p_w40, hrnetv2p_w48" in det


@pytest.fixture(scope="module")
def official_style_checkpoint(tmp_path_factory, torch_models) -> Path:
    """The fixture's Cityscapes network saved the way official segmentation releases are."""
    path = tmp_path_factory.mktemp("ckpt") / "hrnet_w18_small_v1_cityscapes_cls19_1024x2048_trainset.pth"
    return save_checkpoint(official_seg_checkpoint(torch_models[SEG_CITYSCAPES].state_dict()), path)


def test_inspect(official_style_checkpoint, capsys) -> None:
    assert main(["inspect", str(official_style_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "official-seg" in out and "hrnetv2_w18_small_v1" in out and "19" in out


def test_export_checkpoint_via_cli(official_style_checkpoint, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    code = main(["export", "--task", "segmentation", "--dataset", "cityscapes",
                 "--checkpoint", str(official_style_checkpoint), "--name", "cs_small", "--repo", str(repo),
                 "--base-size", "256", "--crop-size", "128", "256", "--instance-kind", "cpu",
                 "--max-batch-size", "2", "--warmup", "none", "--no-served-merge", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Wrote 1 model" in captured.out and "parity.json" in captured.out
    assert [p.name for p in repo.iterdir()] == ["cs_small"]  # no __merge / __segment
    assert "[model_export] exporting ONNX" in captured.err  # progress lines with timings
    meta = metadata_from_config(read_config(repo / "cs_small"))
    assert meta.arch == "hrnetv2_w18_small_v1"  # read from the checkpoint (no --arch given)
    assert meta.weights.random_init is False and meta.weights.origin == "official"
    assert meta.weights.format == "official-seg"
    assert meta.weights.sha256 == file_sha256(official_style_checkpoint)
    assert meta.weights.file == official_style_checkpoint.name
    assert meta.max_batch_size == 2 and meta.align_corners is False
    assert json.loads((repo / "cs_small" / "parity.json").read_text())["passed"] is True


def test_export_rejects_wrong_dataset(official_style_checkpoint, tmp_path, capsys) -> None:
    code = main(["export", "--task", "segmentation", "--dataset", "pascal_context_59",
                 "--checkpoint", str(official_style_checkpoint), "--name", "bad", "--repo", str(tmp_path)])
    assert code == EXIT_FAILED
    assert "59" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_random_init_is_loud_and_recorded(model_metadata, capsys) -> None:
    meta = model_metadata[SEG_CITYSCAPES]
    assert meta.weights.random_init is True and meta.weights.origin == "random-init"
    assert any("RANDOM-INIT" in n for n in meta.notes)
    with pytest.raises(ExportError):
        export_model(ExportRequest(task="segmentation", arch="hrnetv2_w18_small_v1", dataset="cityscapes",
                                   name="x", repo=Path("unused"), random_init=True,
                                   checkpoint=Path("also.pth")))


def test_demo_requests_cover_the_documented_models(tmp_path) -> None:
    from model_export.demo import (
        DEMO_CITYSCAPES_NOTE,
        DEMO_DETECTION_NOTE,
        DEMO_FACTORIES,
        demo_requests,
    )

    reqs = {r.name: r for r in demo_requests(tmp_path)}
    seg, face = reqs["hrnet_w18s1_cityscapes"], reqs["hrnet_w18_300w"]
    det = reqs["hrnetv2p_w18_faster_rcnn_coco"]
    assert (seg.arch, seg.dataset, seg.options.base_size, seg.options.crop_size) == ("hrnetv2_w18_small_v1", "cityscapes", 1024, (512, 1024))
    assert DEMO_CITYSCAPES_NOTE in seg.notes and seg.random_init
    assert (face.arch, face.dataset, face.task) == ("hrnetv2_w18", "300w", "landmarks")
    assert (det.task, det.arch, det.dataset, det.options.max_size) == ("detection", "hrnetv2p_w18", "coco", (800, 480))
    assert det.random_init and DEMO_DETECTION_NOTE in det.notes
    assert det.options.overrides["rpn_post_nms_top_n"] < 2000
    assert set(DEMO_FACTORIES) == {"segmentation", "landmarks", "detection", "face_detection"}
    faces = reqs["blazeface_full_range"]
    # Real weights: neither a checkpoint nor random init, so the packaged .tflite is used.
    assert (faces.task, faces.arch, faces.dataset) == ("face_detection", "blazeface_full_range",
                                                       "mediapipe_face")
    assert faces.checkpoint is None and not faces.random_init


# ------------------------------------------------------------------------------ detection


@pytest.fixture(scope="module")
def detection_checkpoint(tmp_path_factory) -> Path:
    """A demo-random HRNetV2p-W18 Faster R-CNN saved as an HRNet-Object-Detection release."""
    from model_export.archs import backbone_config
    from model_export.nets.detection import build_faster_rcnn
    from model_export.random_init import make_demo_detector

    torch.manual_seed(3)
    model = make_demo_detector(build_faster_rcnn(backbone_config("hrnetv2_w18")), seed=3)
    path = tmp_path_factory.mktemp("det_ckpt") / "FasterR-CNN-HR18-1x.pth"
    return save_checkpoint(to_checkpoint(model, "hrnet-det"), path)


def test_inspect_detection_checkpoint(detection_checkpoint, capsys) -> None:
    assert main(["inspect", str(detection_checkpoint)]) == 0
    out = capsys.readouterr().out
    for part in ("format:        hrnet-det (origin official)", "task:          detection",
                 "arch:          hrnetv2p_w18", "81 (80 + background)", "box arithmetic 'legacy'",
                 "sha256:", "--task detection --arch hrnetv2p_w18 --dataset coco"):
        assert part in out, part


def test_export_detection_checkpoint_via_cli(detection_checkpoint, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    code = main(["export", "--task", "detection", "--arch", "hrnetv2p_w18", "--dataset", "coco",
                 "--checkpoint", str(detection_checkpoint), "--name", "det", "--repo", str(repo),
                 "--max-size", "640", "384", "--rpn-top-n", "500", "100", "--instance-kind", "cpu",
                 "--trace-size", "192x288", "--parity-sizes", "160x240"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Wrote 1 model" in captured.out and "detections matched" in captured.out
    assert "image + image_size inputs" in captured.err and "RANDOM-INIT" not in captured.err
    meta = metadata_from_config(read_config(repo / "det"))
    assert (meta.task, meta.arch, meta.dataset, meta.max_batch_size) == ("detection", "hrnetv2p_w18", "coco", 1)
    assert meta.weights.format == "hrnet-det" and meta.weights.origin == "official"
    assert meta.weights.sha256 == file_sha256(detection_checkpoint)
    assert tuple(meta.detection.max_size) == (640, 384)
    assert meta.detection.box_convention == "legacy_plus_one"
    assert [i.name for i in meta.inputs] == ["image", "image_size"]
    parity = json.loads((repo / "det" / "parity.json").read_text())
    assert parity["passed"] is True and parity["task"] == "detection"


@pytest.mark.parametrize("extra,message", [
    (["--base-size", "512"], "--max-size"),
    (["--tensorrt-plan"], "tensorrt-accelerator"),
    (["--opset", "15"], "opset >= 16"),
])
def test_export_detection_rejects_bad_options(extra, message, tmp_path, capsys) -> None:
    code = main(["export", "--task", "detection", "--arch", "hrnetv2p_w18", "--dataset", "coco",
                 "--random-init", "--name", "det", "--repo", str(tmp_path), *extra])
    assert code == EXIT_FAILED
    assert message in capsys.readouterr().err
    assert not (tmp_path / "det").exists()


@pytest.mark.parametrize("task,arch,dataset,extra,message", [
    ("segmentation", "hrnetv2_w18_small_v1", "cityscapes", ["--max-size", "640", "384"],
     "--max-size and RPN settings apply to detection only"),
    ("landmarks", "hrnetv2_w18", "300w", ["--rpn-top-n", "500", "100"],
     "--max-size and RPN settings apply to detection only"),
    ("detection", "hrnetv2p_w18", "coco", ["--crop-size", "512", "512"],
     "--base-size/--crop-size are segmentation options; detection takes --max-size LONG SHORT"),
    ("segmentation", "hrnetv2_w18_small_v1", "cityscapes",
     ["--tensorrt-accelerator", "fp16", "--instance-kind", "cpu"],
     "--tensorrt-accelerator needs --instance-kind gpu"),
])
def test_export_rejects_options_of_other_tasks(task, arch, dataset, extra, message, tmp_path,
                                               capsys) -> None:
    code = main(["export", "--task", task, "--arch", arch, "--dataset", dataset, "--random-init",
                 "--name", "x", "--repo", str(tmp_path), *extra])
    assert code == EXIT_FAILED
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_detection_dataset_needs_detection_task(tmp_path, capsys) -> None:
    code = main(["export", "--task", "segmentation", "--arch", "hrnetv2_w18", "--dataset", "coco",
                 "--random-init", "--name", "x", "--repo", str(tmp_path)])
    assert code == EXIT_FAILED and "detection dataset" in capsys.readouterr().err


def test_help_shows_defaults_and_the_same_instance_kind(capsys) -> None:
    for command in ("export", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--instance-kind {cpu,gpu} Triton instance group" in text, command
        assert "(default: cpu)" in text and "(default: triton_repo)" in text, command
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 8)", "(default: 1)", "(default: zero)", "(default: [1, 2])"):
        assert default in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_messages_without_stray_quotes_or_a_missing_checkpoint(tmp_path, capsys) -> None:
    code = main(["export", "--task", "segmentation", "--arch", "hrnetv2_w18", "--dataset",
                 "nope", "--random-init", "--name", "x", "--repo", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_FAILED and err.startswith("error: unknown dataset 'nope'; known"), err
    assert not err.startswith('error: "') and not err.endswith('"')
    code = main(["export", "--task", "segmentation", "--dataset", "cityscapes", "--random-init",
                 "--name", "x", "--repo", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == EXIT_FAILED and "--arch is required with --random-init" in err
    assert "does not reveal" not in err and not (tmp_path / "x").exists()
