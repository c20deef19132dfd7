"""Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN on HRNetV2p: the Faster R-CNN of
:mod:`model_export.nets.detection` with cascade box stages and/or FCN mask heads.

Module layout (state-dict prefixes; the checkpoint loaders map the official names onto them):

* Cascade R-CNN (``cfg.cascade_stds``): ``roi_heads.box_head.{s}.fc6/fc7`` (<- ``bbox_head.{s}.
  shared_fcs.0/1``) and ``roi_heads.box_predictor.{s}.cls_score/bbox_pred`` (<- ``fc_cls``,
  ``fc_reg``) for every stage ``s``; each head regresses class-agnostic deltas (4 outputs) with
  its own target stds (official: [.1,.1,.2,.2], [.05,.05,.1,.1], [.033,.033,.067,.067]).
* Masks (``cfg.with_mask``): ``mask_heads.{s}.convs.{0..3}`` (3x3, ReLU), ``mask_heads.{s}.
  upsample`` (2x2 stride-2 transposed conv, ReLU) and ``mask_heads.{s}.conv_logits`` (1x1, one
  channel per class, background channel 0), one head per box stage (<- ``mask_head[.{s}]``).

Test procedure, as the official ``simple_test`` (mmdetection v0.6 ``CascadeRCNN`` and
``MaskRCNN``; MMDetection 2.x/3.x ``CascadeRoIHead``/``StandardRoIHead``):

* Cascade: the RPN proposals go through stage 0; after stages 0 and 1 the RoIs are replaced by
  the stage's decoded (and clipped) boxes; the class score is the softmax of the *mean of the
  three stages' logits*; boxes are the last stage's deltas applied to its input RoIs; then
  ``multiclass_nms`` as for Faster R-CNN.
* Masks: the final detection boxes are pooled (RoIAlign 14x14 over strides 4..32, the box
  branch's sampling and ``+1`` convention), each head gives ``sigmoid`` probabilities at 28x28;
  Cascade Mask R-CNN averages the three heads' probabilities (``merge_aug_masks``). The graph
  keeps only the channel of each detection's predicted class: ``masks`` ``[K, 28, 28]``. Pasting
  into the image and the 0.5 threshold are the gateway's (they depend on the original size).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead

from model_export.nets.detection import (
    DeltaCoder,
    DetectionConfig,
    HRNetFasterRCNN,
    LevelRoIAlign,
    _clip,
    detection_config,
    select_detections,
)
from model_export.nets.hrnet import HRNetConfig
from torchvision.models.detection.image_list import ImageList

#: Target stds of the three official Cascade R-CNN stages.
CASCADE_STDS: tuple[tuple[float, float, float, float], ...] = (
    (0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067))
#: Training IoU thresholds of those stages (positives); recorded, not used at test.
CASCADE_IOUS: tuple[float, ...] = (0.5, 0.6, 0.7)


class StagePredictor(nn.Module):
    """A cascade stage's ``fc_cls`` (classes with background) and class-agnostic ``fc_reg``."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``[R, in]`` -> (logits ``[R, C]``, deltas ``[R, 4]``)."""
        return self.cls_score(x), self.bbox_pred(x)


class CascadeHeads(nn.Module):
    """The box stages of Cascade R-CNN at test time (see the module docstring)."""

    def __init__(self, pool: LevelRoIAlign, cfg: DetectionConfig) -> None:
        super().__init__()
        self.box_roi_pool = pool
        n_in = cfg.neck_channels * cfg.roi_output_size ** 2
        self.box_head = nn.ModuleList(TwoMLPHead(n_in, cfg.representation_size)
                                      for _ in cfg.cascade_stds)
        self.box_predictor = nn.ModuleList(StagePredictor(cfg.representation_size, cfg.num_classes)
                                           for _ in cfg.cascade_stds)
        self.coders = [DeltaCoder(stds, cfg.box_offset) for stds in cfg.cascade_stds]
        self.offset = cfg.box_offset
        self.score_thresh = cfg.score_thresh
        self.nms_thresh = cfg.nms_thresh
        self.detections_per_img = cfg.detections_per_img

    def forward(self, features: dict[str, Tensor], proposals: Tensor, hw: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Proposals ``[R, 4]`` of one image -> ``boxes, scores, labels`` after NMS."""
        rois = proposals
        logits = None
        deltas = proposals
        n = len(self.coders)
        for s in range(n):
            x = self.box_head[s](self.box_roi_pool(features, [rois]))
            cls, deltas = self.box_predictor[s](x)
            logits = cls if logits is None else logits + cls
            if s < n - 1:  # regress_by_class (class-agnostic): the next stage's RoIs, clipped
                rois = _clip(self.coders[s].decode_single(deltas, rois), hw, self.offset)
        assert logits is not None
        scores = F.softmax(logits / n, -1)  # the mean of the stages' logits, then softmax
        boxes = self.coders[-1].decode_single(deltas, rois)  # [R, 4]: the same box every class
        boxes = boxes[:, None, :].expand(-1, scores.shape[1], 4)
        return select_detections(boxes, scores, hw, offset=self.offset,
                                 score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                                 limit=self.detections_per_img)


class FCNMaskHead(nn.Module):
    """mmdet ``FCNMaskHead``: ``num_convs`` 3x3 convs with ReLU, a 2x2 stride-2 transposed conv
    with ReLU, a 1x1 ``conv_logits`` with one channel per class (background at 0)."""

    def __init__(self, num_classes: int, in_channels: int = 256, num_convs: int = 4,
                 channels: int = 256) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(in_channels if i == 0 else channels, channels, 3,
                                             padding=1) for i in range(num_convs))
        self.upsample = nn.ConvTranspose2d(channels if num_convs else in_channels, channels, 2,
                                           stride=2)
        self.conv_logits = nn.Conv2d(channels, num_classes, 1)

    def features(self, x: Tensor) -> Tensor:
        """Pooled ``[K, 256, 14, 14]`` -> ``[K, 256, 28, 28]`` (before ``conv_logits``)."""
        for conv in self.convs:
            x = F.relu(conv(x))
        return F.relu(self.upsample(x))

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        """Logits ``[K, 28, 28]`` of each RoI's class ``labels[k]``: ``conv_logits`` restricted
        to that channel (a per-RoI dot product, so the other 80 channels are never computed)."""
        y = self.features(x)
        # No reshape: ONNX Runtime cannot reshape with a -1 when K = 0 (no detections).
        weight = self.conv_logits.weight[:, :, 0, 0][labels]  # [K, 256]
        b = self.conv_logits.bias[labels]
        return torch.einsum("kchw,kc->khw", y, weight) + b[:, None, None]


class HRNetTwoStage(HRNetFasterRCNN):
    """HRNetV2p Mask R-CNN / Cascade R-CNN / Cascade Mask R-CNN (``cfg.cascade_stds``,
    ``cfg.with_mask``) taking pixel images like :class:`HRNetFasterRCNN`.

    ``forward(image, image_size)`` returns ``(boxes, scores, labels)`` and, with masks, a fourth
    tensor ``masks`` ``[K, 28, 28]``: the probability (sigmoid, stage-averaged) of each
    detection's class over its box, in the box's frame.
    """

    def __init__(self, backbone_cfg: HRNetConfig, cfg: DetectionConfig) -> None:
        super().__init__(backbone_cfg, cfg)
        off = cfg.box_offset
        if cfg.cascade_stds:
            pool = LevelRoIAlign(cfg.roi_strides, cfg.roi_output_size, cfg.roi_sampling_ratio,
                                 cfg.roi_aligned, cfg.roi_finest_scale, off)
            self.roi_heads = CascadeHeads(pool, cfg)  # type: ignore[assignment]
        self.mask_heads = nn.ModuleList()
        if cfg.with_mask:
            self.mask_roi_pool = LevelRoIAlign(cfg.roi_strides, cfg.mask_roi_size,
                                               cfg.roi_sampling_ratio, cfg.roi_aligned,
                                               cfg.roi_finest_scale, off)
            self.mask_heads.extend(FCNMaskHead(cfg.num_classes, cfg.neck_channels,
                                               cfg.mask_num_convs, cfg.neck_channels)
                                   for _ in range(cfg.num_stages))

    def predict_masks(self, features: dict[str, Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
        """``[K, 28, 28]`` probabilities of each box's class, averaged over the mask heads."""
        feats = self.mask_roi_pool(features, [boxes])
        probs = [torch.sigmoid(head(feats, labels)) for head in self.mask_heads]
        return probs[0] if len(probs) == 1 else torch.stack(probs).mean(0)

    def forward(self, image: Tensor, image_size: Tensor | None = None
                ) -> tuple[Tensor, ...]:  # type: ignore[override]
        """``image`` ``[1, 3, H, W]`` pixels -> ``boxes, scores, labels[, masks]``."""
        x = (image - self.pixel_mean) / self.pixel_std
        hw = self.valid_hw(image, image_size)
        images = ImageList(x, [hw])  # type: ignore[list-item]
        features = self.backbone(x)
        proposals, _ = self.rpn(images, features)
        if self.cfg.cascade_stds:
            boxes, scores, labels = self.roi_heads(features, proposals[0], hw)
        else:
            dets, _ = self.roi_heads(features, proposals, [hw])  # type: ignore[list-item]
            boxes, scores, labels = dets[0]["boxes"], dets[0]["scores"], dets[0]["labels"]
        if not self.cfg.with_mask:
            return boxes, scores, labels
        return boxes, scores, labels, self.predict_masks(features, boxes, labels)


#: Detection heads: name -> (cascade stages' stds, masks).
HEADS: dict[str, tuple[tuple[tuple[float, float, float, float], ...], bool]] = {
    "faster_rcnn": ((), False),
    "mask_rcnn": ((), True),
    "cascade_rcnn": (CASCADE_STDS, False),
    "cascade_mask_rcnn": (CASCADE_STDS, True),
}


def head_of(cfg: DetectionConfig) -> str:
    """The head name (:data:`HEADS`) of a config."""
    return {(False, False): "faster_rcnn", (False, True): "mask_rcnn",
            (True, False): "cascade_rcnn", (True, True): "cascade_mask_rcnn"}[
        (bool(cfg.cascade_stds), cfg.with_mask)]


def build_detector(backbone_cfg: HRNetConfig, *, head: str = "faster_rcnn",
                   convention: str = "legacy", num_classes: int = 81,
                   **overrides: object) -> HRNetFasterRCNN:
    """A randomly initialised HRNetV2p detector with ``head`` (:data:`HEADS`), in eval mode."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    stds, with_mask = HEADS[head]
    cfg = detection_config(convention, num_classes=num_classes,  # type: ignore[arg-type]
                           cascade_stds=stds, with_mask=with_mask, **overrides)
    if head == "faster_rcnn":
        return HRNetFasterRCNN(backbone_cfg, cfg).eval()
    return HRNetTwoStage(backbone_cfg, cfg).eval()


def stage_stds(cfg: DetectionConfig) -> Sequence[tuple[float, float, float, float]]:
    """The target stds of each box stage (one entry for Faster/Mask R-CNN)."""
    return cfg.cascade_stds or (cfg.box_stds,)
