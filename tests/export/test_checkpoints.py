"""Strict checkpoint loading: synthesised files in every recognised format, and bad files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from model_export.archs import build_model
from model_export.checkpoints import detect_format, inspect_checkpoint, load_checkpoint
from model_export.checkpoints.hrnet import convert_state_dict
from model_export.checkpoints.matching import CheckpointError
from model_export.checkpoints.reading import OpaqueObject, file_sha256, read_checkpoint
from tests.helpers import official_seg_checkpoint, save_checkpoint

torch.set_num_threads(1)

SEG_ARCH = "hrnetv2_w18_small_v1"
FACE_ARCH = "hrnetv2_w18"


class CustomMeta:
    """Stands for objects that training frameworks pickle into ``meta`` / ``message_hub``."""

    def __init__(self) -> None:
        self.history = [1.0, 2.0]


class Evil:
    """Unpickling this would run a shell command; the loader must never do that."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _randomised(model: nn.Module, seed: int) -> nn.Module:
    """Random weights *and* BN statistics, so equality checks can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def seg_model() -> nn.Module:
    return _randomised(build_model("segmentation", SEG_ARCH, 19), 1)


@pytest.fixture(scope="module")
def face_model() -> nn.Module:
    return _randomised(build_model("landmarks", FACE_ARCH, 68), 2)


def _head_split(sd: dict[str, Tensor], head: str) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    backbone = {k: v for k, v in sd.items() if not k.startswith(head + ".")}
    heads = {k[len(head) + 1:]: v for k, v in sd.items() if k.startswith(head + ".")}
    return backbone, heads


# The file layouts below (and tests.helpers.official_seg_checkpoint) are written out
# independently of the loader's mapping tables.

def mmseg(sd: dict[str, Tensor]) -> dict[str, Any]:
    backbone, head = _head_split(sd, "last_layer")
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state["decode_head.convs.0.conv.weight"] = head["0.weight"]  # ConvModule: no conv bias
    for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        state[f"decode_head.convs.0.bn.{s}"] = head[f"1.{s}"]
    state["decode_head.conv_seg.weight"] = head["3.weight"]
    state["decode_head.conv_seg.bias"] = head["3.bias"]
    state["auxiliary_head.conv_seg.weight"] = torch.rand(19, 8, 1, 1)
    meta = {"mmseg_version": "1.2.2", "CLASSES": ("road",) * 19, "custom": CustomMeta(),
            "seed": np.int64(7), "hist": np.arange(4)}
    return {"meta": meta, "state_dict": state, "message_hub": {"buf": CustomMeta()}}


def mmpose0(sd: dict[str, Tensor]) -> dict[str, Any]:
    backbone, head = _head_split(sd, "head")
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    state.update({f"keypoint_head.final_layer.{k}": v for k, v in head.items()})
    return {"meta": {"epoch": 60}, "state_dict": state, "optimizer": {"state": {}}}


def mmpose1(sd: dict[str, Tensor]) -> dict[str, Any]:
    backbone, head = _head_split(sd, "head")
    state = {f"backbone.{k}": v for k, v in backbone.items()}
    for k, v in head.items():
        idx, rest = k.split(".", 1)
        state[f"head.conv_layers.{idx}.{rest}" if idx in "01" else f"head.final_layer.{rest}"] = v
    return {"meta": {"dataset_meta": {"num_keypoints": 68}}, "state_dict": state}


def _assert_same(src: nn.Module, dst: nn.Module, size: tuple[int, int] = (64, 64)) -> None:
    s, d = src.state_dict(), dst.state_dict()
    assert list(s) == list(d)
    for k in s:
        assert torch.equal(s[k], d[k]), k
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


# ---------------------------------------------------------------------------------- formats

def test_official_seg_release(seg_model: nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(official_seg_checkpoint(seg_model.state_dict()), tmp_path / "seg.pth")
    target = build_model("segmentation", SEG_ARCH, 19)
    report = load_checkpoint(target, path)
    _assert_same(seg_model, target.eval(), (64, 96))
    assert report.info.format == "official-seg" and report.info.origin == "official"
    assert report.ignored == {"loss.criterion.weight": "criterion class weights (loss.*)"}
    assert report.filled == {} and report.warnings == []
    assert report.loaded == 435 and report.renamed == 435
    assert report.info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "official-seg" in report.summary()


def test_official_seg_without_num_batches_tracked(seg_model: nn.Module, tmp_path: Path) -> None:
    ckpt = {"epoch": 484, "best_mIoU": 0.70,
            "state_dict": official_seg_checkpoint(seg_model.state_dict(), num_batches_tracked=False),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]}}
    target = build_model("segmentation", SEG_ARCH, 19)
    path = tmp_path / "old.pth.tar"
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)  # 2019 releases: legacy format
    report = load_checkpoint(target, path)
    nbt = [k for k in target.state_dict() if k.endswith("num_batches_tracked")]
    assert sorted(report.filled) == sorted(nbt) and len(nbt) > 50
    assert all(int(target.state_dict()[k]) == 0 for k in nbt)
    assert {"epoch", "best_mIoU", "optimizer"} <= set(report.ignored)
    assert "num_batches_tracked" in report.summary()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # num_batches_tracked is irrelevant at inference
        assert torch.equal(seg_model(x), target.eval()(x))


def test_official_face_bare_and_module_prefixed(face_model: nn.Module, tmp_path: Path) -> None:
    sd = face_model.state_dict()
    bare = save_checkpoint(dict(sd), tmp_path / "HR18-WFLW.pth")
    wrapped = save_checkpoint({"state_dict": {f"module.{k}": v for k, v in sd.items()}},
                    tmp_path / "HR18-300W.pth")
    for path in (bare, wrapped):
        target = build_model("landmarks", FACE_ARCH, 68)
        report = load_checkpoint(target, path)
        _assert_same(face_model, target.eval())
        assert report.info.format == "official-face" and report.info.task == "landmarks"
        assert report.filled == {} and report.renamed == (0 if path == bare else 1839)
    assert "'module.' prefix (DataParallel)" in inspect_checkpoint(wrapped).wrapping


def test_mmseg_fcn_checkpoint(seg_model: nn.Module, tmp_path: Path) -> None:
    source = build_model("segmentation", SEG_ARCH, 19, fuse_upsample="bilinear_scale")
    source.load_state_dict(seg_model.state_dict())
    with torch.no_grad():
        source.last_layer[0].bias.zero_()  # MMSeg's conv has no bias
    path = save_checkpoint(mmseg(source.state_dict()), tmp_path / "fcn_hr18s.pth")
    target = build_model("segmentation", SEG_ARCH, 19, fuse_upsample="bilinear_scale")
    report = load_checkpoint(target, path)
    _assert_same(source.eval(), target.eval(), (70, 90))
    assert report.info.format == "mmseg" and report.info.fuse_upsample == "bilinear_scale"
    assert list(report.filled) == ["last_layer.0.bias"]
    assert "zero bias" in report.filled["last_layer.0.bias"]
    assert report.ignored["auxiliary_head.conv_seg.weight"].startswith("auxiliary head")
    assert {"meta", "message_hub"} <= set(report.ignored)
    assert report.warnings == []


def test_mm_checkpoint_into_official_upsampling_warns(seg_model: nn.Module,
                                                      tmp_path: Path) -> None:
    path = save_checkpoint(mmseg(seg_model.state_dict()), tmp_path / "fcn.pth")
    report = load_checkpoint(build_model("segmentation", SEG_ARCH, 19), path)
    assert len(report.warnings) == 1 and "multiples of 32" in report.warnings[0]


@pytest.mark.parametrize("layout", [mmpose0, mmpose1])
def test_mmpose_face_checkpoints(layout: Any, face_model: nn.Module, tmp_path: Path) -> None:
    path = save_checkpoint(layout(face_model.state_dict()), tmp_path / "hrnetv2_w18_300w.pth")
    target = build_model("landmarks", FACE_ARCH, 68, fuse_upsample="bilinear_scale")
    report = load_checkpoint(target, path)
    _assert_same(face_model, target.eval())
    assert report.info.format == "mmpose" and report.info.origin == "mmpose"
    assert report.filled == {} and report.loaded == 1839


def test_foreign_objects_become_inert_placeholders(seg_model: nn.Module,
                                                  tmp_path: Path) -> None:
    obj = read_checkpoint(save_checkpoint(mmseg(seg_model.state_dict()), tmp_path / "mm.pth"))
    assert isinstance(obj["meta"]["custom"], OpaqueObject)
    assert isinstance(obj["meta"]["hist"], OpaqueObject)
    assert detect_format(obj).format == "mmseg"


def test_code_in_a_checkpoint_never_runs(seg_model: nn.Module, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    ckpt = mmseg(seg_model.state_dict())
    ckpt["meta"]["evil"] = Evil(marker)
    with pytest.raises(CheckpointError, match="safely.*posix.system"):
        read_checkpoint(save_checkpoint(ckpt, tmp_path / "evil.pth"))
    assert not marker.exists()


# ---------------------------------------------------------------------------------- inspect

@pytest.mark.parametrize("fmt,task,arch,n", [
    ("official-seg", "segmentation", SEG_ARCH, 19),
    ("mmseg", "segmentation", SEG_ARCH, 19),
    ("official-face", "landmarks", FACE_ARCH, 68),
    ("mmpose", "landmarks", FACE_ARCH, 68),
])
def test_inspect(fmt: str, task: str, arch: str, n: int, seg_model: nn.Module,
                 face_model: nn.Module, tmp_path: Path) -> None:
    obj = {"official-seg": lambda: official_seg_checkpoint(seg_model.state_dict()),
           "mmseg": lambda: mmseg(seg_model.state_dict()),
           "official-face": lambda: face_model.state_dict(),
           "mmpose": lambda: mmpose0(face_model.state_dict())}[fmt]()
    path = save_checkpoint(obj, tmp_path / "x.pth")
    info = inspect_checkpoint(path)
    assert (info.format, info.task, info.arch, info.num_outputs) == (fmt, task, arch, n)
    assert info.sha256 == file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    text = info.summary()
    assert fmt in text and arch in text and str(n) in text and info.sha256 in text


def test_inspect_guesses_other_archs_and_detection() -> None:
    w48 = build_model("segmentation", "hrnetv2_w48", 59).state_dict()
    info = detect_format(official_seg_checkpoint(w48))
    assert (info.arch, info.num_outputs) == ("hrnetv2_w48", 59)
    assert info.backbone["width"] == 48 and info.backbone["modules"] == (1, 4, 3)
    s2 = build_model("landmarks", "hrnetv2_w18_small_v2", 98).state_dict()
    det = {f"backbone.{k}": v for k, v in s2.items() if not k.startswith("head.")}
    det["neck.reduction_conv.weight"] = torch.zeros(256, 270, 1, 1)
    det["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(81, 1024)
    info = detect_format({"meta": {}, "state_dict": det})
    assert (info.format, info.task, info.arch, info.num_outputs) == (
        "mmdet", "detection", "hrnetv2_w18_small_v2", 81)
    with pytest.raises(CheckpointError, match="no key mapping"):
        convert_state_dict({"state_dict": det}, nn.Linear(1, 1))


# ---------------------------------------------------------------------------------- failures

def _fails(obj: Any, model: nn.Module) -> CheckpointError:
    with pytest.raises(CheckpointError) as err:
        convert_state_dict(obj, model)
    return err.value


def test_missing_key(seg_model: nn.Module) -> None:
    obj = official_seg_checkpoint(seg_model.state_dict())
    del obj["model.stage2.0.branches.0.0.conv1.weight"]
    err = _fails(obj, build_model("segmentation", SEG_ARCH, 19))
    assert err.missing == ["stage2.0.branches.0.0.conv1.weight"]
    assert not err.unexpected and not err.mismatched
    assert "missing keys (1)" in str(err) and "stage2.0.branches.0.0.conv1.weight" in str(err)


def test_unexpected_keys(seg_model: nn.Module) -> None:
    obj = official_seg_checkpoint(seg_model.state_dict())
    obj["model.aux_layer.weight"] = torch.zeros(3)
    err = _fails(obj, build_model("segmentation", SEG_ARCH, 19))
    assert err.unexpected == ["model.aux_layer.weight (-> aux_layer.weight)"]
    assert "aux_layer.weight" in str(err)
    ckpt = {"state_dict": official_seg_checkpoint(seg_model.state_dict()), "ema": {"decay": 0.9}}
    err = _fails(ckpt, build_model("segmentation", SEG_ARCH, 19))
    assert err.unexpected == ["ema (top-level entry)"]
    obj = official_seg_checkpoint(seg_model.state_dict())
    obj["conv1.weight"] = obj["model.conv1.weight"]  # the same tensor twice
    err = _fails(obj, build_model("segmentation", SEG_ARCH, 19))
    assert err.unexpected == ["conv1.weight (duplicate of model.conv1.weight)"]


def test_wrong_shape_and_wrong_class_count(seg_model: nn.Module) -> None:
    obj = official_seg_checkpoint(seg_model.state_dict())
    err = _fails(obj, build_model("segmentation", SEG_ARCH, 20))
    assert [m[0] for m in err.mismatched] == ["last_layer.3.weight", "last_layer.3.bias"]
    assert err.mismatched[1][1:] == ((19,), (20,))
    assert "mis-shaped" in str(err) and "[19] vs [20]" in str(err)


def test_wrong_arch(seg_model: nn.Module) -> None:
    err = _fails(official_seg_checkpoint(seg_model.state_dict()),
                 build_model("segmentation", "hrnetv2_w18_small_v2", 19))
    assert err.missing and err.mismatched
    assert "hrnetv2_w18_small_v1" in str(err) and "hrnetv2_w18_small_v2" in str(err)


def test_wrong_task(face_model: nn.Module, seg_model: nn.Module) -> None:
    with pytest.raises(CheckpointError, match="wrong task.*landmarks.*segmentation"):
        convert_state_dict(face_model.state_dict(), build_model("segmentation", FACE_ARCH, 68))
    with pytest.raises(CheckpointError, match="wrong task"):
        convert_state_dict(mmseg(seg_model.state_dict()),
                           build_model("landmarks", SEG_ARCH, 19))


def test_unmappable_openmmlab_heads(seg_model: nn.Module, face_model: nn.Module) -> None:
    obj = mmseg(seg_model.state_dict())
    obj["state_dict"]["decode_head.convs.1.conv.weight"] = torch.zeros(240, 240, 3, 3)
    err = _fails(obj, build_model("segmentation", SEG_ARCH, 19))
    assert "decode_head.convs.1.conv.weight" in err.unexpected and "FCNHead" in str(err)
    obj = mmpose0(face_model.state_dict())
    obj["state_dict"]["keypoint_head.deconv_layers.0.weight"] = torch.zeros(270, 256, 4, 4)
    err = _fails(obj, build_model("landmarks", FACE_ARCH, 68))
    assert "keypoint_head.deconv_layers.0.weight" in err.unexpected and "deconv" in str(err)


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint",
                                     bytes(np.random.default_rng(0).integers(0, 256, 256))])
def test_not_a_checkpoint_file(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "absent.pth")


def test_not_a_checkpoint_object(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="holds a list"):
        read_checkpoint(save_checkpoint([torch.zeros(1)], tmp_path / "list.pth"))
    with pytest.raises(CheckpointError, match="no tensors"):
        detect_format({"epoch": 3, "note": "hi"})
    with pytest.raises(CheckpointError, match="unrecognised checkpoint"):
        detect_format({"fc.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match="backbone but no known head"):
        detect_format({"backbone.conv1.weight": torch.zeros(64, 3, 3, 3)})


def test_legacy_file_with_foreign_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"meta": {"hist": np.arange(3)}, "state_dict": {"head.3.weight": torch.zeros(1)}},
               path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy-format"):
        read_checkpoint(path)
