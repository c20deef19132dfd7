"""model_export.triton_cpu: the python-backend twin keeps everything a client can see."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from tritonclient.grpc import model_config_pb2 as mc

from model_export.triton_cpu import write_cpu_variant
from model_export.triton_cpu.__main__ import main
from model_export.repository import read_config


def test_twin_keeps_the_interface(model_repo: Path, tmp_path: Path) -> None:
    src = model_repo / "seg_cityscapes"
    pydeps = tmp_path / "pydeps"
    dst = write_cpu_variant(src, tmp_path / "repo", pydeps)
    assert dst == tmp_path / "repo" / "seg_cityscapes"
    original, twin = read_config(src), read_config(dst)

    assert twin.backend == "python" and not twin.platform
    assert [g.kind for g in twin.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert not twin.HasField("optimization")
    for field in ("name", "max_batch_size", "input", "output", "dynamic_batching", "model_warmup"):
        assert getattr(twin, field) == getattr(original, field), field
    assert twin.parameters["hrnet_metadata"] == original.parameters["hrnet_metadata"]
    assert Path(twin.parameters["onnx_model"].string_value) == (src / "1" / "model.onnx").resolve()
    assert twin.parameters["pydeps"].string_value == str(pydeps.resolve())
    assert (dst / "1" / "model.py").is_file()
    assert (dst / "hrnet.json").read_text() == (src / "hrnet.json").read_text()


def test_model_py_finds_pydeps_from_its_config(
    model_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template reads the pydeps parameter of ../config.pbtxt at import time (before numpy)."""
    monkeypatch.delenv("HRNET_TRITON_PYDEPS", raising=False)
    pydeps = tmp_path / "some dir" / "pydeps"
    dst = write_cpu_variant(model_repo / "face_300w", tmp_path / "repo", pydeps)
    spec = importlib.util.spec_from_file_location("twin_model", dst / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec.loader.exec_module(module)
    assert module._PYDEPS == str(pydeps.resolve())
    assert sys.path[0] == str(pydeps.resolve())


def test_cli_mirrors_a_repository(
    model_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(model_repo), str(tmp_path / "cpu"), "--pydeps", str(tmp_path / "deps")]) == 0
    written = sorted(Path(line).name for line in capsys.readouterr().out.split())
    assert written == sorted(p.name for p in model_repo.iterdir() if (p / "config.pbtxt").is_file())
    # The served merge's BLS model is copied as it is, with the directory of its numpy.
    from model_export.repository import read_config

    bls = read_config(tmp_path / "cpu" / "seg_lip__segment" / "config.pbtxt")
    assert bls.backend == "python" and bls.parameters["pydeps"].string_value == str(
        (tmp_path / "deps").resolve())
    assert (tmp_path / "cpu" / "seg_lip__segment" / "1" / "model.py").read_text() == (
        model_repo / "seg_lip__segment" / "1" / "model.py").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([str(empty), str(tmp_path / "cpu2")]) == 1


def test_detection_twin_keeps_inputs_outputs_and_warmup(det_repo: Path, tmp_path: Path) -> None:
    """Two inputs (FP32 + INT64), three outputs, max_batch_size 1, and the warm-up sample with its
    ``image_size`` data file (Triton fails the load if that file is missing)."""
    src = next(p for p in det_repo.iterdir() if (p / "config.pbtxt").is_file())
    original = read_config(src)
    assert original.model_warmup, "the detection export should carry a warm-up sample"
    dst = write_cpu_variant(src, tmp_path / "repo", tmp_path / "pydeps")
    twin = read_config(dst)
    assert twin.backend == "python" and twin.max_batch_size == 1
    assert [(i.name, i.data_type, list(i.dims)) for i in twin.input] == [
        ("image", mc.TYPE_FP32, [3, -1, -1]), ("image_size", mc.TYPE_INT64, [2])]
    assert [o.name for o in twin.output] == ["boxes", "scores", "labels"]
    assert twin.output == original.output
    assert twin.model_warmup == original.model_warmup
    data_file = twin.model_warmup[0].inputs["image_size"].input_data_file
    assert (dst / "warmup" / data_file).read_bytes() == (src / "warmup" / data_file).read_bytes()

    lean = write_cpu_variant(src, tmp_path / "lean", tmp_path / "pydeps", warmup=False)
    assert not read_config(lean).model_warmup and not (lean / "warmup").exists()
    assert main([str(src), str(tmp_path / "cli"), "--no-warmup"]) == 0
    assert not read_config(tmp_path / "cli" / src.name).model_warmup

    # An entry whose warm-up data file is missing is refused (Triton would fail to load it).
    broken = tmp_path / "broken" / src.name
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.onnx").write_bytes(b"")
    shutil.copyfile(src / "config.pbtxt", broken / "config.pbtxt")
    with pytest.raises(FileNotFoundError, match="warm-up data"):
        write_cpu_variant(broken, tmp_path / "out", tmp_path / "pydeps")
