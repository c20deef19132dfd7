"""HRNetV2p + HRFPN + Faster R-CNN: structure, parameter counts, legacy arithmetic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_export.archs import backbone_config, build_model, list_archs
from model_export.nets.detection import (
    AnchorGrid,
    DeltaCoder,
    HRNetFPN,
    _nms_view,
    build_faster_rcnn,
)
from service.tasks.detection.boxes import batched_nms, iou_matrix

torch.set_num_threads(1)


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_w18_parameter_count_from_official_layers() -> None:
    # HRNetV2-W18 backbone: the official face network (9,654,398) minus its head
    #   (270*270+270) + 2*270 (BN) + (270*68+68) = 92,138          -> 9,562,260
    # HRFPN: reduction 1x1 (15*18=270 -> 256, bias) 69,376 + 5 x 3x3 256->256 (590,080) -> 3,019,776
    # RPN: 3x3 conv 590,080 + cls 256*3+3 = 771 + reg 256*12+12 = 3,084            -> 593,935
    # Box head: fc6 256*7*7*1024+1024 = 12,846,080; fc7 1,049,600; fc_cls 1024*81+81 = 83,025;
    #   fc_reg 1024*324+324 = 332,100                                               -> 14,310,805
    expected = 9_562_260 + 3_019_776 + 593_935 + 14_310_805
    model = build_faster_rcnn(backbone_config("hrnetv2_w18"))
    assert _params(model) == expected == 27_486_776
    assert _params(model.backbone.body) == 9_562_260
    # The official README's "#Params 26.2M" is this count in units of 2**20.
    assert round(expected / 2**20, 1) == 26.2


@pytest.mark.parametrize("arch,published", [("hrnetv2_w32", 45.0), ("hrnetv2_w40", 60.5)])
def test_wider_parameter_counts_match_published(arch: str, published: float) -> None:
    model = build_faster_rcnn(backbone_config(arch))
    assert abs(_params(model) / 2**20 - published) < 0.1


def test_registered_archs_and_builder() -> None:
    # Faster R-CNN first; then the Mask / Cascade / Cascade Mask R-CNN heads on each backbone
    assert list_archs("detection")[:4] == ["hrnetv2p_w18", "hrnetv2p_w32", "hrnetv2p_w40",
                                           "hrnetv2p_w48"]
    assert len(list_archs("detection")) == 16
    model = build_model("detection", "hrnetv2p_w48", 81)
    assert model.backbone.neck.reduction_conv[0].in_channels == 15 * 48


def test_hrfpn_levels_and_key_names() -> None:
    torch.manual_seed(0)
    net = HRNetFPN(backbone_config("hrnetv2_w18")).eval()
    keys = net.state_dict().keys()
    assert "neck.reduction_conv.0.weight" in keys and "neck.reduction_conv.0.bias" in keys
    assert {f"neck.fpn_conv.{i}.weight" for i in range(5)} <= set(keys)
    # nearest-neighbour fuse upsampling is parameter-free at index 2 (official layout)
    assert isinstance(net.body.stage2[0].fuse_layers[0][1][2], torch.nn.Upsample)
    with torch.no_grad():
        out = net(torch.randn(1, 3, 320, 480))
    assert [tuple(v.shape) for v in out.values()] == [
        (1, 256, 80, 120), (1, 256, 40, 60), (1, 256, 20, 30), (1, 256, 10, 15), (1, 256, 5, 7)]


def test_legacy_and_continuous_base_anchors() -> None:
    legacy = AnchorGrid((4,), (8,), (0.5, 1.0, 2.0), legacy=True).cell_anchors[0]
    # mmdet v0.6: centre 1.5, w = 4*8*sqrt(2) = 45.25, h = 22.63, inclusive extent, rounded.
    assert legacy.tolist() == [[-21, -9, 24, 12], [-14, -14, 17, 17], [-9, -21, 12, 24]]
    cont = AnchorGrid((4,), (8,), (0.5, 1.0, 2.0), legacy=False).cell_anchors[0]
    np.testing.assert_allclose(cont[0].numpy(), [-22.627, -11.314, 22.627, 11.314], atol=1e-3)


def test_anchor_strides_fixed_for_sizes_not_multiple_of_64() -> None:
    from torchvision.models.detection.image_list import ImageList

    grid = AnchorGrid((64,), (8,), (1.0,), legacy=False)
    fmap = torch.zeros(1, 1, 12, 7)  # 800 x 448 input: 12.5 -> 12 cells at stride 64
    anchors = grid(ImageList(torch.zeros(1, 3, 800, 448), [(800, 448)]), [fmap])[0]
    assert anchors[1, 0] - anchors[0, 0] == 64 and anchors[7, 1] - anchors[0, 1] == 64


def test_legacy_delta_coder_inverts_mmdet_bbox2delta() -> None:
    coder = DeltaCoder((0.1, 0.1, 0.2, 0.2), offset=1.0)
    rois = torch.tensor([[10.0, 20.0, 49.0, 99.0]])  # 40 x 80 inclusive
    assert torch.allclose(coder.decode_single(torch.zeros(1, 4), rois), rois)
    # dx = 1 (0.1 after the std) moves the box by 0.1 * width = 4 pixels
    moved = coder.decode_single(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), rois)
    assert torch.allclose(moved, rois + torch.tensor([4.0, 0.0, 4.0, 0.0]))
    # log-size deltas are clamped at |log(16/1000)|
    big = coder.decode_single(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), rois)
    assert big[0, 2] - big[0, 0] + 1 == pytest.approx(40 * 1000 / 16, rel=1e-4)


def test_plus_one_nms_trick_matches_legacy_iou() -> None:
    from torchvision.ops import box_iou, nms

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 8], 1)
    scores = torch.rand(200, generator=g)
    legacy = iou_matrix(boxes.numpy(), boxes.numpy(), offset=1.0)
    np.testing.assert_allclose(box_iou(_nms_view(boxes, 1.0), _nms_view(boxes, 1.0)).numpy(),
                               legacy, atol=1e-5)
    ref = batched_nms(boxes.numpy(), scores.numpy(), np.zeros(200, np.int64), 0.5, offset=1.0)
    got = nms(_nms_view(boxes, 1.0), scores, 0.5).numpy()
    assert ref.tolist() == got.tolist()
