"""HRNetV2p Faster R-CNN checkpoints, loaded strictly into :class:`HRNetFasterRCNN`.

Formats (``CheckpointInfo.format``), all ``{"meta": ..., "state_dict": ...}`` or bare:

* ``hrnet-det`` (origin ``official``): HRNet-Object-Detection (mmdetection v0.6) releases such as
  ``FasterR-CNN-HR18-1x.pth``: ``neck.reduction_conv.0``, ``neck.fpn_conv.{i}``, top-level
  ``rpn_head.*`` and ``bbox_head.*``; ``fc_cls`` has 81 rows with the background at 0 and
  ``fc_reg`` 81*4 rows. Legacy (``+1``) box arithmetic.
* ``mmdet-v1`` (origin ``mmdet-legacy``): MMDetection 1.x, the same but ``neck.reduction_conv.conv``
  (ConvModule). Legacy arithmetic.
* ``mmdet-v2`` (origin ``mmdet``): MMDetection 2.x/3.x: ``neck.reduction_conv.conv``,
  ``neck.fpn_convs.{i}.conv``, ``roi_head.bbox_head.*``; ``fc_cls`` puts the background *last*
  (row 80) and ``fc_reg`` has 80*4 rows (no background). Rows are remapped: background moved to
  row 0, four zero rows inserted for the (never decoded) background box. Continuous arithmetic.

Backbone keys are the official names under ``backbone.`` in every version. RPN channels need no
permutation: mmdet (``scale_major`` base anchors) and torchvision both order a location's anchors
ratio-major, and both flatten RPN outputs as (y, x, anchor). Mask R-CNN files load too: their
``mask_head`` is ignored and the box branch served.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from model_export.archs import detection_arch
from model_export.checkpoints.backbone import guess_backbone
from model_export.checkpoints.matching import (
    CheckpointError,
    CheckpointInfo,
    Ignored,
    LoadReport,
    Match,
    StateDict,
    map_keys,
    match_state_dict,
    unwrap,
)
from model_export.nets.detection import Convention, HRNetFasterRCNN

#: Box arithmetic of each format.
FORMAT_CONVENTION: dict[str, Convention] = {
    "hrnet-det": "legacy", "mmdet-v1": "legacy", "mmdet-v2": "continuous"}
_ORIGIN = {"hrnet-det": "official", "mmdet-v1": "mmdet-legacy", "mmdet-v2": "mmdet"}
_SOURCE = {"hrnet-det": "HRNet-Object-Detection (mmdetection v0.6)", "mmdet-v1": "MMDetection 1.x",
           "mmdet-v2": "MMDetection 2.x/3.x"}
# mmdetection saves {"meta": ..., "state_dict": ...}; a bare state dict is read as is.
_CONTAINERS = ("state_dict",)

# (file-key regex, model-key template) per format; first match wins.
_RULES_COMMON: list[tuple[str, str]] = [
    (r"backbone\.(.+)", r"backbone.body.\1"),
    (r"neck\.reduction_conv\.(?:0|conv)\.(weight|bias)", r"backbone.neck.reduction_conv.0.\1"),
    (r"neck\.fpn_convs?\.(\d)\.(?:conv\.)?(weight|bias)", r"backbone.neck.fpn_conv.\1.\2"),
    (r"rpn_head\.rpn_conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    (r"rpn_head\.rpn_cls\.(weight|bias)", r"rpn.head.cls_logits.\1"),
    (r"rpn_head\.rpn_reg\.(weight|bias)", r"rpn.head.bbox_pred.\1"),
    (r"(?:roi_head\.)?bbox_head\.shared_fcs\.0\.(weight|bias)", r"roi_heads.box_head.fc6.\1"),
    (r"(?:roi_head\.)?bbox_head\.shared_fcs\.1\.(weight|bias)", r"roi_heads.box_head.fc7.\1"),
    (r"(?:roi_head\.)?bbox_head\.fc_cls\.(weight|bias)", r"roi_heads.box_predictor.cls_score.\1"),
    (r"(?:roi_head\.)?bbox_head\.fc_reg\.(weight|bias)", r"roi_heads.box_predictor.bbox_pred.\1"),
]
_IGNORE: list[tuple[str, str]] = [
    (r"(?:roi_head\.)?mask_head\.", "Mask R-CNN mask head (this model serves boxes only)"),
    (r"(?:roi_head\.)?mask_roi_extractor\.", "Mask R-CNN mask RoI extractor (no weights)"),
    (r"data_preprocessor\.", "data preprocessor buffers (normalisation constants)"),
]


def detect_detection_format(sd: Mapping[str, Any]) -> str:
    """``hrnet-det``, ``mmdet-v1`` or ``mmdet-v2`` from the key names; CheckpointError otherwise."""
    keys = [k for k in sd if isinstance(k, str)]
    has = lambda p: any(k.startswith(p) for k in keys)  # noqa: E731
    if not (has("backbone.") and has("neck.") and has("rpn_head.")):
        raise CheckpointError("not an HRNetV2p Faster R-CNN checkpoint: expected backbone.*, "
                              f"neck.* and rpn_head.* keys (first keys: {', '.join(keys[:5])})")
    if has("roi_head."):
        return "mmdet-v2"
    if not has("bbox_head."):
        raise CheckpointError("detection checkpoint without a box head (bbox_head.* or "
                              "roi_head.bbox_head.*); only two-stage Faster/Mask R-CNN is supported")
    return "mmdet-v1" if has("neck.reduction_conv.conv.") else "hrnet-det"


def _arch(sd: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Backbone facts and detection arch (``hrnetv2p_w{C}``) from the ``backbone.*`` tensors."""
    body = {k[len("backbone."):]: v for k, v in sd.items()
            if isinstance(k, str) and k.startswith("backbone.") and isinstance(v, Tensor)}
    facts, backbone = guess_backbone(body)
    arch = detection_arch(backbone)
    if arch is None and isinstance(body.get("transition1.0.0.weight"), Tensor):
        arch = f"hrnetv2p_w{int(body['transition1.0.0.weight'].shape[0])}"
    return facts, arch


def _describe(state: StateDict) -> CheckpointInfo:
    sd = state.entries
    fmt = detect_detection_format(sd)
    cls = sd.get("roi_head.bbox_head.fc_cls.weight", sd.get("bbox_head.fc_cls.weight"))
    facts, arch = _arch(sd)
    notes = [f"HRNetV2p Faster R-CNN from {_SOURCE[fmt]}, box arithmetic "
             f"{FORMAT_CONVENTION[fmt]!r}"]
    if fmt == "mmdet-v2":
        notes.append("classifier rows: background last in the file, moved first on loading")
    rpn = sd.get("rpn_head.rpn_cls.weight")
    if isinstance(rpn, Tensor):
        notes.append(f"RPN: {int(rpn.shape[0])} sigmoid anchor(s) per location")
    if any(isinstance(k, str) and "mask_head." in k for k in sd):
        notes.append("Mask R-CNN file: the mask head is ignored, boxes are served")
    if arch is not None:
        notes.append(f"export with: --task detection --arch {arch} --dataset coco")
    return CheckpointInfo(
        format=fmt, origin=_ORIGIN[fmt], task="detection", arch=arch,
        num_outputs=int(cls.shape[0]) if isinstance(cls, Tensor) else None,
        num_tensors=sum(isinstance(v, Tensor) for v in sd.values()), align_corners=False,
        fuse_upsample="nearest", wrapping=tuple(state.wrapping), backbone=facts,
        notes=tuple(notes))


def inspect_detection(obj: Any) -> CheckpointInfo:
    """Format, origin, arch (``hrnetv2p_w{C}``) and class count (with background) of a file."""
    return _describe(unwrap(obj, _CONTAINERS))


def _map_key(key: str) -> str | Ignored | None:
    for rx, reason in _IGNORE:
        if re.match(rx, key):
            return Ignored(reason)
    for rx, tmpl in _RULES_COMMON:
        m = re.fullmatch(rx, key)
        if m:
            return m.expand(tmpl)
    return None


def _remap_v2_classes(t: dict[str, Tensor], filled: dict[str, str], num_classes: int) -> None:
    """MMDetection 2.x+: background last -> first; class-specific reg without background."""
    for name in ("weight", "bias"):
        key = f"roi_heads.box_predictor.cls_score.{name}"
        if key in t and t[key].shape[0] == num_classes:
            t[key] = torch.cat([t[key][-1:], t[key][:-1]])
        key = f"roi_heads.box_predictor.bbox_pred.{name}"
        if key in t and t[key].shape[0] == (num_classes - 1) * 4:
            t[key] = torch.cat([t[key].new_zeros((4, *t[key].shape[1:])), t[key]])
            filled[key + "[0:4]"] = ("background box deltas (absent in MMDetection 2.x+, never "
                                     "decoded) set to 0")


def convert_detection_state_dict(obj: Any, model: HRNetFasterRCNN
                                 ) -> tuple[dict[str, Tensor], LoadReport]:
    """Map a loaded detection checkpoint onto ``model``'s names, strictly.

    Raises :class:`CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    state = unwrap(obj, _CONTAINERS)
    info = _describe(state)
    mapped = map_keys(state, _map_key)
    filled: dict[str, str] = {}
    if info.format == "mmdet-v2":
        _remap_v2_classes(mapped.tensors, filled, model.cfg.num_classes)
    match = match_state_dict(model, mapped, filled=filled)
    if not match.complete:
        raise match.error(_header(info, model), _hints(match))
    warnings = []
    want = FORMAT_CONVENTION[info.format]
    if model.cfg.convention != want:
        warnings.append(f"{info.format} weights were trained with {want!r} box arithmetic, the "
                        f"model uses {model.cfg.convention!r}")
    return match.state_dict, match.report(info, warnings)


def _header(info: CheckpointInfo, model: HRNetFasterRCNN) -> str:
    model_arch = detection_arch(model.backbone_cfg.name) or model.backbone_cfg.name
    return (f"checkpoint ({info.format}, arch {info.arch or 'unknown'}, {info.num_outputs} "
            f"classes) does not fit the model ({model_arch}, {model.cfg.num_classes} classes):")


def _hints(match: Match) -> list[str]:
    if any("rpn_head.rpn_cls" in k or "cls_logits" in k for k, *_ in match.mismatched):
        return ["the RPN classifier must be sigmoid-based (one channel per anchor)"]
    return []
