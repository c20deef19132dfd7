"""HRNetV2p + Faster R-CNN: HRFPN neck and a Faster R-CNN assembled from torchvision components.

Module layout (state-dict prefixes):

* ``backbone.body``: :class:`~model_export.nets.hrnet.HighResolutionNet` with nearest-neighbour
  fuse upsampling, as in HRNet-Object-Detection (``backbone.*`` in the official checkpoints);
* ``backbone.neck``: :class:`HRFPN` (official ``neck.reduction_conv.0`` and ``neck.fpn_conv.{0..4}``);
* ``rpn``: torchvision ``RegionProposalNetwork`` with ``RPNHead`` (``rpn.head.conv.0.0``,
  ``rpn.head.cls_logits``, ``rpn.head.bbox_pred`` <- mmdet ``rpn_conv/rpn_cls/rpn_reg``);
* ``roi_heads``: torchvision ``RoIHeads`` with ``TwoMLPHead`` (``fc6``/``fc7`` <- ``shared_fcs.0/1``)
  and ``FastRCNNPredictor`` (``cls_score``/``bbox_pred`` <- ``fc_cls``/``fc_reg``), background at 0.

Two box arithmetics (:data:`Convention`), both reproduced exactly where torchvision differs:

* ``"legacy"`` (HRNet-Object-Detection = mmdetection v0.6, and MMDetection 1.x): boxes are
  inclusive (``w = x2 - x1 + 1``); base anchors are centred at ``(stride-1)/2`` and rounded;
  decoding adds/subtracts 0.5; boxes are clipped to ``[0, W-1]``; NMS and RoI-level mapping use
  ``+1`` areas; RoIAlign (``aligned=False``, 2 samples) ends at ``(x2+1)*scale``; RPN keeps 2000.
* ``"continuous"`` (MMDetection 2.x/3.x): anchors centred at 0 and not rounded, ``w = x2 - x1``,
  clipping to ``[0, W]``, RoIAlign ``aligned=True`` with adaptive sampling, RPN keeps 1000.

Boxes are clipped to the resized image's valid region (``img_shape`` in mmdet), which the caller
passes explicitly as ``image_size`` = (valid_h, valid_w) before the bottom/right padding; the graph
never guesses it from pixel values, so clients may pad with any value. Known residual differences
to the official code: the legacy
``+1`` of the final NMS is applied in network-input pixels (mmdet applies it after dividing by the
scale factor), and RoIs narrower than one feature cell are widened to one cell by torchvision's
RoIAlign (mmdet's legacy kernel lets them shrink).
"""

from __future__ import annotations

from collections import OrderedDict
import math
from dataclasses import dataclass, replace
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align

from service.contract import MMDET_PIXEL_MEAN, MMDET_PIXEL_STD

from model_export.nets.hrnet import HighResolutionNet, HRNetConfig

Convention = Literal["legacy", "continuous"]
CONVENTIONS: tuple[str, ...] = ("legacy", "continuous")

# |log(16/1000)|: mmdet's wh_ratio_clip and torchvision's bbox_xform_clip.
_DELTA_CLIP = math.log(1000.0 / 16)


@dataclass(frozen=True)
class DetectionConfig:
    """Faster R-CNN settings; defaults are HRNet-Object-Detection's ``faster_rcnn_hrnetv2p_*``."""

    convention: Convention = "legacy"
    num_classes: int = 81  # background + COCO 80
    neck_channels: int = 256
    anchor_strides: tuple[int, ...] = (4, 8, 16, 32, 64)
    anchor_scales: tuple[float, ...] = (8.0,)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n: int = 2000  # per level
    rpn_post_nms_top_n: int = 2000  # over all levels
    rpn_nms_thresh: float = 0.7
    roi_strides: tuple[int, ...] = (4, 8, 16, 32)
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    roi_aligned: bool = False
    roi_finest_scale: int = 56
    representation_size: int = 1024
    box_stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100
    # Cascade R-CNN: one class-agnostic box head per stage with these target stds (() = Faster).
    cascade_stds: tuple[tuple[float, float, float, float], ...] = ()
    # Mask R-CNN: FCN mask head(s) on RoIAlign mask_roi_size features (one per cascade stage).
    with_mask: bool = False
    mask_roi_size: int = 14
    mask_num_convs: int = 4
    mask_thr_binary: float = 0.5

    @property
    def box_offset(self) -> float:
        """1 for the legacy inclusive-pixel boxes, 0 for continuous boxes."""
        return 1.0 if self.convention == "legacy" else 0.0

    @property
    def num_stages(self) -> int:
        """Box-head stages: 3 for the official Cascade R-CNN, 1 for Faster/Mask R-CNN."""
        return max(1, len(self.cascade_stds))

    @property
    def mask_resolution(self) -> int:
        """Side of the mask head's output (the transposed conv doubles the RoI size): 28."""
        return 2 * self.mask_roi_size


def detection_config(convention: Convention = "legacy", **overrides: object) -> DetectionConfig:
    """The test settings of HRNet-Object-Detection (``legacy``) or MMDetection 2.x/3.x."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    cfg = DetectionConfig(convention=convention)
    if convention == "continuous":
        # MMDetection 2.x/3.x faster_rcnn_r50_fpn test_cfg and RoIAlign(sampling_ratio=0).
        cfg = replace(cfg, rpn_pre_nms_top_n=1000, rpn_post_nms_top_n=1000,
                      roi_sampling_ratio=0, roi_aligned=True)
    return replace(cfg, **overrides)  # type: ignore[arg-type]


class HRFPN(nn.Module):
    """HRFPN neck (HRNet-Object-Detection ``mmdet/models/necks/hrfpn.py``).

    Branches 1..3 are bilinearly upsampled by 2, 4, 8 (``align_corners=False``) to branch 0 and
    concatenated (15C channels for HRNetV2), reduced by a 1x1 conv with bias to ``out_channels``,
    average-pooled by 2, 4, 8, 16 into five levels, and each level gets its own 3x3 conv.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5,
                 pooling: Literal["AVG", "MAX"] = "AVG") -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_outs = num_outs
        self.pooling = pooling
        self.reduction_conv = nn.Sequential(nn.Conv2d(sum(in_channels), out_channels, 1))
        self.fpn_conv = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in range(num_outs))

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Four branches (strides 4..32) -> ``num_outs`` levels (strides 4..4*2**(num_outs-1))."""
        ups = [feats[0]] + [
            F.interpolate(f, scale_factor=float(2 ** i), mode="bilinear", align_corners=False)
            for i, f in enumerate(feats[1:], start=1)
        ]
        out = self.reduction_conv(torch.cat(ups, dim=1))
        pool = F.avg_pool2d if self.pooling == "AVG" else F.max_pool2d
        levels = [out] + [pool(out, kernel_size=2 ** i, stride=2 ** i)
                          for i in range(1, self.num_outs)]
        return [conv(x) for conv, x in zip(self.fpn_conv, levels)]


class HRNetFPN(nn.Module):
    """HRNetV2p: the backbone (``body``) plus :class:`HRFPN` (``neck``); returns named levels."""

    def __init__(self, cfg: HRNetConfig, out_channels: int = 256) -> None:
        super().__init__()
        self.body = HighResolutionNet(cfg, fuse_upsample="nearest")
        self.neck = HRFPN(self.body.out_channels, out_channels)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        """Normalised images (H, W multiples of 32) -> ``{"0": stride 4, ..., "4": stride 64}``."""
        levels = self.neck(self.body.forward_branches(x))
        return OrderedDict((str(i), f) for i, f in enumerate(levels))


def _clip(boxes: Tensor, hw: Tensor, offset: float) -> Tensor:
    """Clip ``[..., 4]`` boxes to ``[0, W - offset] x [0, H - offset]`` (hw: tensor ``[H, W]``)."""
    hw = hw.to(boxes.dtype) - offset
    limits = torch.stack([hw[1], hw[0], hw[1], hw[0]])
    return torch.min(boxes.clamp(min=0), limits)


class AnchorGrid(nn.Module):
    """Anchors at fixed strides (torchvision derives strides as ``size // grid``, wrong when the
    input is not a multiple of 64). Order per location is ratio-major, as in both mmdet and
    torchvision, so RPN channel ``a`` of a location scores anchor ``a``."""

    def __init__(self, strides: Sequence[int], scales: Sequence[float], ratios: Sequence[float],
                 legacy: bool) -> None:
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.cell_anchors = [self._base(s, scales, ratios, legacy) for s in self.strides]

    @staticmethod
    def _base(stride: int, scales: Sequence[float], ratios: Sequence[float], legacy: bool
              ) -> Tensor:
        r = torch.tensor(ratios, dtype=torch.float64)
        s = torch.tensor(scales, dtype=torch.float64)
        h_ratios = torch.sqrt(r)
        w_ratios = 1.0 / h_ratios
        ws = (stride * w_ratios[:, None] * s[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * s[None, :]).reshape(-1)
        if legacy:  # mmdet v0.6 AnchorGenerator: centre (base-1)/2, inclusive extent, rounded
            c = 0.5 * (stride - 1)
            base = torch.stack([c - 0.5 * (ws - 1), c - 0.5 * (hs - 1),
                                c + 0.5 * (ws - 1), c + 0.5 * (hs - 1)], dim=-1).round()
        else:  # MMDetection 2.x AnchorGenerator(center_offset=0): no rounding
            base = torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)
        return base.to(torch.float32)

    def num_anchors_per_location(self) -> list[int]:
        """Anchors per feature-map location, per level."""
        return [int(a.shape[0]) for a in self.cell_anchors]

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        """All anchors ``[sum_l H_l*W_l*A, 4]`` per image, ordered (level, y, x, anchor)."""
        per_level = []
        for fmap, stride, base in zip(feature_maps, self.strides, self.cell_anchors):
            h, w = fmap.shape[-2], fmap.shape[-1]
            device = fmap.device
            sx = torch.arange(0, w, dtype=torch.int64, device=device).to(torch.float32) * stride
            sy = torch.arange(0, h, dtype=torch.int64, device=device).to(torch.float32) * stride
            yy, xx = torch.meshgrid(sy, sx, indexing="ij")
            xx, yy = xx.reshape(-1), yy.reshape(-1)
            shifts = torch.stack([xx, yy, xx, yy], dim=1)
            per_level.append((shifts.view(-1, 1, 4) + base.to(device).view(1, -1, 4)).reshape(-1, 4))
        anchors = torch.cat(per_level)
        return [anchors for _ in range(image_list.tensors.shape[0])]


class DeltaCoder(det_utils.BoxCoder):
    """mmdet ``delta2bbox`` (means 0, the given stds) for both conventions; clamps |dw|, |dh|."""

    def __init__(self, stds: Sequence[float], offset: float) -> None:
        super().__init__(weights=tuple(1.0 / s for s in stds), bbox_xform_clip=_DELTA_CLIP)
        self.stds = tuple(float(s) for s in stds)
        self.offset = float(offset)

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:  # noqa: D102
        boxes = boxes.to(rel_codes.dtype)
        o = self.offset
        dx = rel_codes[:, 0::4] * self.stds[0]
        dy = rel_codes[:, 1::4] * self.stds[1]
        dw = (rel_codes[:, 2::4] * self.stds[2]).clamp(-_DELTA_CLIP, _DELTA_CLIP)
        dh = (rel_codes[:, 3::4] * self.stds[3]).clamp(-_DELTA_CLIP, _DELTA_CLIP)
        px = ((boxes[:, 0] + boxes[:, 2]) * 0.5)[:, None]
        py = ((boxes[:, 1] + boxes[:, 3]) * 0.5)[:, None]
        pw = (boxes[:, 2] - boxes[:, 0] + o)[:, None]
        ph = (boxes[:, 3] - boxes[:, 1] + o)[:, None]
        gw = pw * dw.exp()
        gh = ph * dh.exp()
        gx = px + pw * dx
        gy = py + ph * dy
        half = 0.5 * o
        out = torch.stack([gx - gw * 0.5 + half, gy - gh * 0.5 + half,
                           gx + gw * 0.5 - half, gy + gh * 0.5 - half], dim=2)
        return out.flatten(1)


def _nms_view(boxes: Tensor, offset: float) -> Tensor:
    """Boxes whose continuous IoU equals the ``+offset`` IoU of ``boxes`` (x2, y2 grown)."""
    if offset == 0.0:
        return boxes
    return boxes + boxes.new_tensor([0.0, 0.0, offset, offset])


class ProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with mmdet's proposal filtering: per-level top-n, clip, per-level NMS
    (with the convention's IoU), top-n overall. mmdet keeps zero-size proposals (min_bbox_size 0),
    so no small-box removal."""

    def __init__(self, *args: object, box_offset: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.box_offset = box_offset

    def filter_proposals(self, proposals: Tensor, objectness: Tensor,
                         image_shapes: list[tuple[int, int]], num_anchors_per_level: list[int]
                         ) -> tuple[list[Tensor], list[Tensor]]:  # noqa: D102
        num_images = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach().reshape(num_images, -1)
        levels = torch.cat([torch.full((n,), idx, dtype=torch.int64, device=device)
                            for idx, n in enumerate(num_anchors_per_level)])
        levels = levels.reshape(1, -1).expand_as(objectness)
        top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)
        batch_idx = torch.arange(num_images, device=device)[:, None]
        objectness = objectness[batch_idx, top_n_idx]
        levels = levels[batch_idx, top_n_idx]
        proposals = proposals[batch_idx, top_n_idx]
        final_boxes, final_scores = [], []
        for boxes, logits, lvl, hw in zip(proposals, objectness, levels, image_shapes):
            scores = torch.sigmoid(logits)
            boxes = _clip(boxes, hw, self.box_offset)  # type: ignore[arg-type]
            keep = box_ops.batched_nms(_nms_view(boxes, self.box_offset), scores, lvl,
                                       self.nms_thresh)
            keep = keep[: self.post_nms_top_n()]
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores


class LevelRoIAlign(nn.Module):
    """mmdet ``SingleRoIExtractor``: level = floor(log2(sqrt(area) / 56 + 1e-6)) clamped to the
    levels, then RoIAlign at that level's stride. Legacy boxes are passed with ``x2+1, y2+1``,
    which gives exactly the legacy area and RoIAlign end ``(x2 + 1) * scale``."""

    def __init__(self, strides: Sequence[int], output_size: int, sampling_ratio: int,
                 aligned: bool, finest_scale: int, box_offset: float) -> None:
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        self.output_size = output_size
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.finest_scale = finest_scale
        self.box_offset = box_offset

    def forward(self, features: dict[str, Tensor], proposals: list[Tensor],
                image_shapes: object = None) -> Tensor:
        """Pooled features ``[sum(len(p)), C, S, S]`` in the order of ``proposals``."""
        feats = list(features.values())[: len(self.strides)]
        rois = torch.cat([torch.cat([torch.full_like(p[:, :1], float(i)), p], dim=1)
                          for i, p in enumerate(proposals)])
        if self.box_offset:
            rois = rois + torch.tensor([0.0, 0.0, 0.0, self.box_offset, self.box_offset],
                                       dtype=rois.dtype, device=rois.device)
        scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
        lvl = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        lvl = lvl.clamp(min=0, max=len(feats) - 1).to(torch.int64)
        pooled, order = [], []
        for level, (feat, stride) in enumerate(zip(feats, self.strides)):
            idx = torch.where(lvl == level)[0]
            pooled.append(roi_align(feat, rois[idx], self.output_size, 1.0 / stride,
                                    self.sampling_ratio, self.aligned))
            order.append(idx)
        # Put each RoI back in its place: concatenation order -> original order.
        inverse = torch.argsort(torch.cat(order))
        return torch.cat(pooled)[inverse]


def select_detections(boxes: Tensor, scores: Tensor, hw: Tensor, *, offset: float,
                      score_thresh: float, nms_thresh: float, limit: int
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """mmdet ``multiclass_nms`` of one image: ``boxes`` ``[R, C, 4]`` (per class, background at
    0), softmax ``scores`` ``[R, C]``: clip, drop the background, score > threshold, per-class NMS
    with the convention's IoU, the best ``limit``."""
    num_classes = scores.shape[-1]
    boxes = _clip(boxes, hw, offset)
    labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
    boxes = boxes[:, 1:].reshape(-1, 4)
    scores = scores[:, 1:].reshape(-1)
    labels = labels[:, 1:].reshape(-1)
    inds = torch.where(scores > score_thresh)[0]
    boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
    keep = box_ops.batched_nms(_nms_view(boxes, offset), scores, labels, nms_thresh)
    keep = keep[:limit]
    return boxes[keep], scores[keep], labels[keep]


class DetectionHeads(RoIHeads):
    """torchvision's RoIHeads with mmdet's ``multiclass_nms``: softmax, class-specific decoding,
    clip, score > threshold, per-class NMS with the convention's IoU, best ``detections_per_img``.
    mmdet removes no small boxes here."""

    def __init__(self, *args: object, box_offset: float, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.box_offset = box_offset

    def postprocess_detections(self, class_logits: Tensor, box_regression: Tensor,
                               proposals: list[Tensor], image_shapes: list[tuple[int, int]]
                               ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:  # noqa: D102
        boxes_per_image = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)
        pred_scores = F.softmax(class_logits, -1)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, hw in zip(pred_boxes.split(boxes_per_image, 0),
                                     pred_scores.split(boxes_per_image, 0), image_shapes):
            b, s, lab = select_detections(
                boxes, scores, hw, offset=self.box_offset,  # type: ignore[arg-type]
                score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                limit=self.detections_per_img)
            all_boxes.append(b)
            all_scores.append(s)
            all_labels.append(lab)
        return all_boxes, all_scores, all_labels


class HRNetFasterRCNN(nn.Module):
    """HRNetV2p Faster R-CNN taking *pixel* images (RGB, 0..255) and normalising inside.

    ``forward(image, image_size)`` with ``image`` ``[1, 3, H, W]`` (H, W multiples of 32, padded
    bottom/right; the official padding is the mean pixel) and ``image_size`` ``[1, 2]`` int64 (the
    valid height, width) returns ``(boxes [K, 4], scores [K], labels [K] int64)``; boxes are in the
    input's pixel frame, clipped to ``image_size``; labels index ``background + classes``
    (1..num_classes-1).
    """

    def __init__(self, backbone_cfg: HRNetConfig, cfg: DetectionConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or detection_config()
        self.cfg = cfg
        self.backbone_cfg = backbone_cfg
        off = cfg.box_offset
        self.register_buffer("pixel_mean", torch.tensor(MMDET_PIXEL_MEAN).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("pixel_std", torch.tensor(MMDET_PIXEL_STD).view(1, 3, 1, 1),
                             persistent=False)
        self.backbone = HRNetFPN(backbone_cfg, cfg.neck_channels)
        anchors = AnchorGrid(cfg.anchor_strides, cfg.anchor_scales, cfg.anchor_ratios,
                             legacy=cfg.convention == "legacy")
        head = RPNHead(cfg.neck_channels, anchors.num_anchors_per_location()[0])
        self.rpn = ProposalNetwork(
            anchors, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
            positive_fraction=0.5,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n, "testing": cfg.rpn_pre_nms_top_n},
            post_nms_top_n={"training": cfg.rpn_post_nms_top_n, "testing": cfg.rpn_post_nms_top_n},
            nms_thresh=cfg.rpn_nms_thresh, box_offset=off)
        self.rpn.box_coder = DeltaCoder((1.0, 1.0, 1.0, 1.0), off)
        pool = LevelRoIAlign(cfg.roi_strides, cfg.roi_output_size, cfg.roi_sampling_ratio,
                             cfg.roi_aligned, cfg.roi_finest_scale, off)
        box_head = TwoMLPHead(cfg.neck_channels * cfg.roi_output_size ** 2,
                              cfg.representation_size)
        predictor = FastRCNNPredictor(cfg.representation_size, cfg.num_classes)
        self.roi_heads = DetectionHeads(
            pool, box_head, predictor, fg_iou_thresh=0.5, bg_iou_thresh=0.5,
            batch_size_per_image=512, positive_fraction=0.25, bbox_reg_weights=None,
            score_thresh=cfg.score_thresh, nms_thresh=cfg.nms_thresh,
            detections_per_img=cfg.detections_per_img, box_offset=off)
        self.roi_heads.box_coder = DeltaCoder(cfg.box_stds, off)

    @staticmethod
    def valid_hw(image: Tensor, image_size: Tensor | None) -> Tensor:
        """``[2]`` int64 (h, w) to clip boxes to: ``image_size[0]`` limited to ``[1, padded size]``.

        ``image_size`` (``[N, 2]`` or ``[2]``, int64) is the resized image's size before padding;
        ``None`` means the whole input is valid (no padding). Limiting to the padded size keeps a
        client's oversized value harmless.
        """
        size = torch._shape_as_tensor(image)[-2:].to(torch.int64)
        if image_size is None:
            return size
        hw = image_size.reshape(-1, 2)[0].to(torch.int64)
        return torch.minimum(hw, size).clamp(min=1)

    def forward(self, image: Tensor, image_size: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor]:
        """``image`` ``[1, 3, H, W]`` pixels -> ``boxes, scores, labels`` of that one image.

        ``image_size`` (``[1, 2]`` int64: resized height, width before padding) bounds the boxes
        as in the official code; see :meth:`valid_hw`.
        """
        x = (image - self.pixel_mean) / self.pixel_std
        hw = self.valid_hw(image, image_size)
        images = ImageList(x, [hw])  # type: ignore[list-item]
        features = self.backbone(x)
        proposals, _ = self.rpn(images, features)
        dets, _ = self.roi_heads(features, proposals, [hw])  # type: ignore[list-item]
        return dets[0]["boxes"], dets[0]["scores"], dets[0]["labels"]


def build_faster_rcnn(backbone_cfg: HRNetConfig, *, convention: Convention = "legacy",
                      num_classes: int = 81, **overrides: object) -> HRNetFasterRCNN:
    """A randomly initialised HRNetV2p Faster R-CNN in eval mode."""
    cfg = detection_config(convention, num_classes=num_classes, **overrides)
    return HRNetFasterRCNN(backbone_cfg, cfg).eval()
