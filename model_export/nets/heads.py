"""Whole official networks: the HRNetV2 backbone plus its segmentation or landmark head.

Both subclass :class:`~model_export.nets.hrnet.HighResolutionNet`, so backbone keys stay
unprefixed exactly as in the official state dicts, and the head sits beside them as ``last_layer``
(segmentation, ``seg_hrnet.py``) or ``head`` (face landmarks, the face repository's ``hrnet.py``).
Inputs are *normalised* images, as for the official nets; outputs are at 1/4 resolution.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from model_export.nets.hrnet import (
    BN_MOMENTUM,
    FuseUpsample,
    HighResolutionNet,
    HRNetConfig,
    concat_branches,
)


def _official_head(channels: int, num_outputs: int) -> nn.Sequential:
    """1x1 conv (bias) -> BN -> ReLU -> 1x1 conv (bias); indices 0, 1, 3 carry weights."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=1, stride=1, padding=0),
        nn.BatchNorm2d(channels, momentum=BN_MOMENTUM),
        nn.ReLU(inplace=True),
        nn.Conv2d(channels, num_outputs, kernel_size=1, stride=1, padding=0),
    )


class HRNetSegmentation(HighResolutionNet):
    """Official HRNetV2 segmentation network: logits ``[N, num_classes, ceil(H/4), ceil(W/4)]``.

    ``align_corners`` governs both the fuse layers' and the head's bilinear upsampling, as the
    official ``HRNet-OCR`` branch's ``MODEL.ALIGN_CORNERS`` does (False in ``pytorch-v1.1``).
    """

    task: ClassVar[str] = "segmentation"

    def __init__(self, cfg: HRNetConfig, num_classes: int, *, align_corners: bool = False,
                 fuse_upsample: FuseUpsample = "bilinear") -> None:
        super().__init__(cfg, fuse_upsample=fuse_upsample, align_corners=align_corners)
        self.num_outputs = num_classes
        self.last_layer = _official_head(sum(self.out_channels), num_classes)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Normalised images ``[N, 3, H, W]`` -> logits at 1/4 resolution."""
        feats = self.forward_branches(x)
        return self.last_layer(concat_branches(feats, align_corners=self.align_corners))


class HRNetLandmarks(HighResolutionNet):
    """Official HRNetV2 facial-landmark network: heatmaps ``[N, num_landmarks, H/4, W/4]``.

    The official face code upsamples with ``align_corners=False`` everywhere; the flag exists for
    symmetry with segmentation.
    """

    task: ClassVar[str] = "landmarks"

    def __init__(self, cfg: HRNetConfig, num_landmarks: int, *, align_corners: bool = False,
                 fuse_upsample: FuseUpsample = "bilinear") -> None:
        super().__init__(cfg, fuse_upsample=fuse_upsample, align_corners=align_corners)
        self.num_outputs = num_landmarks
        self.head = _official_head(sum(self.out_channels), num_landmarks)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        """Normalised face crops ``[N, 3, 256, 256]`` -> heatmaps ``[N, L, 64, 64]``."""
        feats = self.forward_branches(x)
        return self.head(concat_branches(feats, align_corners=self.align_corners))
