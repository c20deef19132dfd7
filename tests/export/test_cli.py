"""The ``python -m model_export`` CLI: help, listings, inspect, export (in-process but one call)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model_export.checkpoints import file_sha256
from model_export.cli import EXIT_FAILED, main
from model_export.pipeline import ExportError, ExportRequest, export_model
from model_export.triton_repo import metadata_from_config, read_config
from tests.conftest import SEG_CITYSCAPES

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
                "--tensorrt-accelerator", "--tensorrt-plan", "--instance-kind", "--parity-sizes", "--opset"):
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
    assert main(["list-archs", "--task", "segmentation"]) == 0
    out = capsys.readouterr().out
    assert "hrnetv2_w18_small_v1" in out and "hrnetv2_w48" in out


@pytest.fixture(scope="module")
def official_style_checkpoint(tmp_path_factory, torch_models) -> Path:
    """The fixture's Cityscapes network saved the way official segmentation releases are."""
    sd = {f"model.{k}": v for k, v in torch_models[SEG_CITYSCAPES].state_dict().items()}
    sd["loss.criterion.weight"] = torch.ones(19)
    path = tmp_path_factory.mktemp("ckpt") / "hrnet_w18_small_v1_cityscapes_cls19_1024x2048_trainset.pth"
    torch.save(sd, path)
    return path


def test_inspect(official_style_checkpoint, capsys) -> None:
    assert main(["inspect", str(official_style_checkpoint)]) == 0
    out = capsys.readouterr().out
    assert "official-seg" in out and "hrnetv2_w18_small_v1" in out and "19" in out


def test_export_checkpoint_via_cli(official_style_checkpoint, tmp_path, capsys) -> None:
    repo = tmp_path / "repo"
    code = main(["export", "--task", "segmentation", "--dataset", "cityscapes",
                 "--checkpoint", str(official_style_checkpoint), "--name", "cs_small", "--repo", str(repo),
                 "--base-size", "256", "--crop-size", "128", "256", "--instance-kind", "cpu",
                 "--max-batch-size", "2", "--warmup", "none", *SMALL])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Wrote 1 model" in captured.out and "parity.json" in captured.out
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
    from model_export.demo import DEMO_CITYSCAPES_NOTE, DEMO_FACTORIES, demo_requests

    reqs = {r.name: r for r in demo_requests(tmp_path)}
    seg, face = reqs["hrnet_w18s1_cityscapes"], reqs["hrnet_w18_300w"]
    assert (seg.arch, seg.dataset, seg.base_size, seg.crop_size) == ("hrnetv2_w18_small_v1", "cityscapes", 1024, (512, 1024))
    assert DEMO_CITYSCAPES_NOTE in seg.notes and seg.random_init
    assert (face.arch, face.dataset, face.task) == ("hrnetv2_w18", "300w", "landmarks")
    assert set(DEMO_FACTORIES) >= {"segmentation", "landmarks"}
