"""HRNetV2 networks: every arch builds and runs, and the official networks' state dicts match."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from model_export.archs import ARCH_NAMES, backbone_config, build_model, list_archs, list_tasks
from model_export.nets.heads import HRNetLandmarks, HRNetSegmentation
from model_export.nets.hrnet import HighResolutionNet

torch.set_num_threads(1)

# Copies of the reference manifests (tests/export/manifests/README.md).
KEYS_DIR = Path(__file__).resolve().parent / "manifests"

EXPECTED_ARCHS = [
    "hrnetv2_w18_small_v1", "hrnetv2_w18_small_v2", "hrnetv2_w18", "hrnetv2_w30", "hrnetv2_w32",
    "hrnetv2_w40", "hrnetv2_w44", "hrnetv2_w48", "hrnetv2_w64",
]

# manifest -> (task, arch, outputs, official parameter count)
MANIFESTS = {
    "seg_w18s1_keys.txt": ("segmentation", "hrnetv2_w18_small_v1", 19, 1_540_819),
    "seg_w18s2_keys.txt": ("segmentation", "hrnetv2_w18_small_v2", 19, 3_939_579),
    "seg_w48_cityscapes_keys.txt": ("segmentation", "hrnetv2_w48", 19, 65_859_379),
    "seg_w48_pascal59_keys.txt": ("segmentation", "hrnetv2_w48", 59, 65_888_219),
    "seg_w48_lip_keys.txt": ("segmentation", "hrnetv2_w48", 20, 65_860_100),
    "face_w18_300w_keys.txt": ("landmarks", "hrnetv2_w18", 68, 9_654_398),
}


def _quarter(n: int) -> int:
    return math.ceil(math.ceil(n / 2) / 2)


def _read_manifest(name: str) -> list[tuple[str, tuple[int, ...]]]:
    # A missing manifest folder must fail loudly, never skip.
    assert KEYS_DIR.is_dir(), f"reference manifests not found at {KEYS_DIR}"
    rows = []
    for line in (KEYS_DIR / name).read_text().splitlines():
        if not line.strip():
            continue
        key, shape = line.split("\t")
        rows.append((key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())))
    return rows


def test_registry_names() -> None:
    assert list(ARCH_NAMES) == EXPECTED_ARCHS
    assert {"segmentation", "landmarks"} <= set(list_tasks())
    assert list_archs("segmentation") == EXPECTED_ARCHS
    assert list_archs("landmarks") == EXPECTED_ARCHS
    assert backbone_config("hrnetv2_w48").width == 48
    assert backbone_config("hrnetv2_w18").head_channels == 270
    assert backbone_config("hrnetv2_w18_small_v1").branch_channels == (16, 32, 64, 128)


@pytest.mark.parametrize("arch", EXPECTED_ARCHS)
def test_every_arch_builds_and_runs_both_tasks(arch: str) -> None:
    width = backbone_config(arch).width
    x = torch.randn(1, 3, 64, 96)
    for task, n in (("segmentation", 7), ("landmarks", 5)):
        model = build_model(task, arch, n).eval()
        assert model.task == task
        with torch.no_grad():
            feats = model.forward_branches(x)
            out = model(x)
        assert [tuple(f.shape) for f in feats] == [
            (1, width * 2**i, 64 // 2 ** (i + 2), 96 // 2 ** (i + 2)) for i in range(4)]
        assert tuple(out.shape) == (1, n, 16, 24)
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(50, 70), (33, 97), (65, 64)])
def test_output_is_quarter_resolution_with_ceil_rounding(size: tuple[int, int]) -> None:
    h, w = size
    model = build_model("segmentation", "hrnetv2_w18_small_v1", 3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, h, w))
    assert tuple(out.shape) == (2, 3, _quarter(h), _quarter(w))


@pytest.mark.parametrize("manifest", sorted(MANIFESTS))
def test_state_dict_matches_official_manifest(manifest: str) -> None:
    task, arch, n, params = MANIFESTS[manifest]
    model = build_model(task, arch, n)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    expected = _read_manifest(manifest)
    assert len(got) == len(expected)
    assert got == expected  # names, shapes and order
    assert sum(p.numel() for p in model.parameters()) == params


def test_registry_builds_the_official_networks() -> None:
    seg = build_model("segmentation", "hrnetv2_w48", 59, align_corners=True)
    assert isinstance(seg, HRNetSegmentation) and seg.align_corners
    assert seg.last_layer[3].out_channels == 59
    face = build_model("landmarks", "hrnetv2_w18", 68)
    assert isinstance(face, HRNetLandmarks)
    assert face.head[3].out_channels == 68
    assert not face.align_corners


def test_build_model_rejects_bad_names() -> None:
    with pytest.raises(ValueError, match="hrnetv2_w18_small_v1.*hrnetv2_w64"):
        build_model("segmentation", "hrnetv2_w99", 19)
    with pytest.raises(ValueError, match="segmentation.*landmarks"):
        build_model("depth", "hrnetv2_w18", 19)
    with pytest.raises(ValueError, match="valid"):
        backbone_config("resnet50")
    with pytest.raises(ValueError):
        list_archs("depth")
    with pytest.raises(ValueError):
        build_model("segmentation", "hrnetv2_w18", 0)
    with pytest.raises(ValueError, match="fuse_upsample"):
        HighResolutionNet(backbone_config("hrnetv2_w18"), fuse_upsample="cubic")  # type: ignore[arg-type]


def test_align_corners_flag_is_wired() -> None:
    torch.manual_seed(0)
    a = build_model("segmentation", "hrnetv2_w18_small_v1", 4).eval()
    b = build_model("segmentation", "hrnetv2_w18_small_v1", 4, align_corners=True).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x))


def test_nearest_fuse_layers_for_detection() -> None:
    bilinear = build_model("segmentation", "hrnetv2_w18_small_v2", 19)
    nearest = build_model("segmentation", "hrnetv2_w18_small_v2", 19, fuse_upsample="nearest")
    # Parameter-free upsampling: the state dicts are interchangeable.
    assert list(nearest.state_dict()) == list(bilinear.state_dict())
    for stage in (nearest.stage2, nearest.stage3, nearest.stage4):
        for module in stage:
            for i, row in enumerate(module.fuse_layers):
                for j, layer in enumerate(row):
                    if j > i:
                        up = layer[2]
                        assert isinstance(up, nn.Upsample)
                        assert up.mode == "nearest" and up.scale_factor == 2 ** (j - i)
                    elif j < i:
                        assert len(layer) == i - j
    for stage in (bilinear.stage2, bilinear.stage3, bilinear.stage4):
        for module in stage:
            for i, row in enumerate(module.fuse_layers):
                for j, layer in enumerate(row):
                    if j > i:
                        assert len(layer) == 2  # conv, BN; upsampled in forward
    nearest.load_state_dict(bilinear.state_dict())
    nearest.eval()
    bilinear.eval()
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 96)
        y_near, y_bil = nearest(x), bilinear(x)
    assert y_near.shape == y_bil.shape == (1, 19, 16, 24)
    assert not torch.allclose(y_near, y_bil)


def test_bilinear_scale_matches_official_on_multiples_of_32() -> None:
    torch.manual_seed(0)
    official = build_model("landmarks", "hrnetv2_w18", 8).eval()
    mm = build_model("landmarks", "hrnetv2_w18", 8, fuse_upsample="bilinear_scale").eval()
    mm.load_state_dict(official.state_dict())
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 96)
        torch.testing.assert_close(mm(x), official(x), rtol=0, atol=1e-6)
        x = torch.randn(1, 3, 70, 90)  # not a multiple of 32: the two conventions differ
        a, b = mm(x), official(x)
    assert a.shape == b.shape == (1, 8, 18, 23)
    assert not torch.allclose(a, b)
