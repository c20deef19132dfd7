"""HRNetV2p Faster R-CNN, Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN checkpoints, loaded
strictly into :class:`HRNetFasterRCNN` (or its :class:`~model_export.nets.instance.HRNetTwoStage`).

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
ratio-major, and both flatten RPN outputs as (y, x, anchor).

Heads (:func:`detect_head`, from the key names): Cascade R-CNN files number their box heads
(``bbox_head.{s}.*`` / ``roi_head.bbox_head.{s}.*``, class-agnostic ``fc_reg`` of 4 rows); Mask
R-CNN files add ``mask_head.*`` (``mask_head.{s}.*`` per cascade stage): ``convs.{i}.conv``,
``upsample``, ``conv_logits``. Legacy files have 81 ``conv_logits`` channels (background 0);
MMDetection 2.x+ files 80, so a zero background channel is inserted (never selected: labels are
1..80). A mask file loaded into a box-only model (``--arch hrnetv2p_w18``) ignores its mask
heads, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
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
from model_export.nets.instance import head_of

#: Box arithmetic of each format.
FORMAT_CONVENTION: dict[str, Convention] = {
    "hrnet-det": "legacy", "mmdet-v1": "legacy", "mmdet-v2": "continuous"}
_ORIGIN = {"hrnet-det": "official", "mmdet-v1": "mmdet-legacy", "mmdet-v2": "mmdet"}
_SOURCE = {"hrnet-det": "HRNet-Object-Detection (mmdetection v0.6)", "mmdet-v1": "MMDetection 1.x",
           "mmdet-v2": "MMDetection 2.x/3.x"}
# mmdetection saves {"meta": ..., "state_dict": ...}; a bare state dict is read as is.
_CONTAINERS = ("state_dict",)
_TITLES = {"faster_rcnn": "Faster R-CNN", "mask_rcnn": "Mask R-CNN",
           "cascade_rcnn": "Cascade R-CNN", "cascade_mask_rcnn": "Cascade Mask R-CNN"}

# (file-key regex, model-key template) per format; first match wins.
_RULES_COMMON: list[tuple[str, str]] = [
    (r"backbone\.(.+)", r"backbone.body.\1"),
    (r"neck\.reduction_conv\.(?:0|conv)\.(weight|bias)", r"backbone.neck.reduction_conv.0.\1"),
    (r"neck\.fpn_convs?\.(\d)\.(?:conv\.)?(weight|bias)", r"backbone.neck.fpn_conv.\1.\2"),
    (r"rpn_head\.rpn_conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
    (r"rpn_head\.rpn_cls\.(weight|bias)", r"rpn.head.cls_logits.\1"),
    (r"rpn_head\.rpn_reg\.(weight|bias)", r"rpn.head.bbox_pred.\1"),
    # Cascade stages first (numbered heads), then the single head of Faster/Mask R-CNN.
    (r"(?:roi_head\.)?bbox_head\.(\d)\.shared_fcs\.0\.(weight|bias)",
     r"roi_heads.box_head.\1.fc6.\2"),
    (r"(?:roi_head\.)?bbox_head\.(\d)\.shared_fcs\.1\.(weight|bias)",
     r"roi_heads.box_head.\1.fc7.\2"),
    (r"(?:roi_head\.)?bbox_head\.(\d)\.fc_cls\.(weight|bias)",
     r"roi_heads.box_predictor.\1.cls_score.\2"),
    (r"(?:roi_head\.)?bbox_head\.(\d)\.fc_reg\.(weight|bias)",
     r"roi_heads.box_predictor.\1.bbox_pred.\2"),
    (r"(?:roi_head\.)?bbox_head\.shared_fcs\.0\.(weight|bias)", r"roi_heads.box_head.fc6.\1"),
    (r"(?:roi_head\.)?bbox_head\.shared_fcs\.1\.(weight|bias)", r"roi_heads.box_head.fc7.\1"),
    (r"(?:roi_head\.)?bbox_head\.fc_cls\.(weight|bias)", r"roi_heads.box_predictor.cls_score.\1"),
    (r"(?:roi_head\.)?bbox_head\.fc_reg\.(weight|bias)", r"roi_heads.box_predictor.bbox_pred.\1"),
]
_RULES_MASK: list[tuple[str, str]] = [
    (r"(?:roi_head\.)?mask_head\.(\d)\.convs\.(\d)\.conv\.(weight|bias)",
     r"mask_heads.\1.convs.\2.\3"),
    (r"(?:roi_head\.)?mask_head\.(\d)\.(upsample|conv_logits)\.(weight|bias)",
     r"mask_heads.\1.\2.\3"),
    (r"(?:roi_head\.)?mask_head\.convs\.(\d)\.conv\.(weight|bias)", r"mask_heads.0.convs.\1.\2"),
    (r"(?:roi_head\.)?mask_head\.(upsample|conv_logits)\.(weight|bias)", r"mask_heads.0.\1.\2"),
]
_MASK_HEAD = r"(?:roi_head\.)?mask_head\."
_IGNORE: list[tuple[str, str]] = [
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


def detect_head(sd: Mapping[str, Any]) -> tuple[str, int]:
    """(head name of :data:`~model_export.nets.instance.HEADS`, box stages) from the key names:
    numbered box heads are a cascade, ``mask_head.*`` keys add masks."""
    stages = {int(m.group(1)) for k in sd if isinstance(k, str)
              for m in [re.match(r"(?:roi_head\.)?bbox_head\.(\d)\.", k)] if m}
    masks = any(isinstance(k, str) and re.match(_MASK_HEAD, k) for k in sd)
    if stages:
        return ("cascade_mask_rcnn" if masks else "cascade_rcnn"), len(stages)
    return ("mask_rcnn" if masks else "faster_rcnn"), 1


def _arch(sd: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """Backbone facts and detection arch (``hrnetv2p_w{C}``) from the ``backbone.*`` tensors."""
    body = {k[len("backbone."):]: v for k, v in sd.items()
            if isinstance(k, str) and k.startswith("backbone.") and isinstance(v, Tensor)}
    facts, backbone = guess_backbone(body)
    arch = detection_arch(backbone)
    if arch is None and isinstance(body.get("transition1.0.0.weight"), Tensor):
        arch = f"hrnetv2p_w{int(body['transition1.0.0.weight'].shape[0])}"
    head, _ = detect_head(sd)
    if arch is not None and head != "faster_rcnn":
        arch = f"{head}_{arch}"
    return facts, arch


def _describe(state: StateDict) -> CheckpointInfo:
    sd = state.entries
    fmt = detect_detection_format(sd)
    head, stages = detect_head(sd)
    cls = next((sd[k] for k in ("roi_head.bbox_head.fc_cls.weight", "bbox_head.fc_cls.weight",
                                "roi_head.bbox_head.0.fc_cls.weight", "bbox_head.0.fc_cls.weight")
                if k in sd), None)
    facts, arch = _arch(sd)
    notes = [f"HRNetV2p {_TITLES[head]} from {_SOURCE[fmt]}, box arithmetic "
             f"{FORMAT_CONVENTION[fmt]!r}"]
    if stages > 1:
        notes.append(f"cascade: {stages} box stages, class scores = softmax of the mean of the "
                     "stages' logits, boxes from the last stage")
    if head in ("mask_rcnn", "cascade_mask_rcnn"):
        notes.append("instance masks: 28x28 per detection, pasted into the image by the gateway "
                     f"({'legacy get_seg_masks' if FORMAT_CONVENTION[fmt] == 'legacy' else 'paste_masks_in_image'} rule)")
    if fmt == "mmdet-v2":
        notes.append("classifier rows: background last in the file, moved first on loading")
    rpn = sd.get("rpn_head.rpn_cls.weight")
    if isinstance(rpn, Tensor):
        notes.append(f"RPN: {int(rpn.shape[0])} sigmoid anchor(s) per location")
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


def _mapper(with_mask: bool) -> Callable[[str], str | Ignored | None]:
    """The key mapping into a model with (or without) mask heads."""
    rules = _RULES_COMMON + (_RULES_MASK if with_mask else [])

    def map_key(key: str) -> str | Ignored | None:
        for rx, reason in _IGNORE:
            if re.match(rx, key):
                return Ignored(reason)
        if not with_mask and re.match(_MASK_HEAD, key):
            return Ignored("Mask R-CNN mask head (this model serves boxes only)")
        for rx, tmpl in rules:
            m = re.fullmatch(rx, key)
            if m:
                return m.expand(tmpl)
        return None

    return map_key


def _remap_v2_classes(t: dict[str, Tensor], filled: dict[str, str], num_classes: int) -> None:
    """MMDetection 2.x+: background last -> first; class-specific reg without background."""
    for key in list(t):
        if re.fullmatch(r"roi_heads\.box_predictor\.(?:\d\.)?cls_score\.(weight|bias)", key):
            if t[key].shape[0] == num_classes:
                t[key] = torch.cat([t[key][-1:], t[key][:-1]])
        elif re.fullmatch(r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", key):
            # class-specific (Faster/Mask R-CNN); cascade stages regress 4 class-agnostic rows
            if t[key].shape[0] == (num_classes - 1) * 4:
                t[key] = torch.cat([t[key].new_zeros((4, *t[key].shape[1:])), t[key]])
                filled[key + "[0:4]"] = ("background box deltas (absent in MMDetection 2.x+, "
                                         "never decoded) set to 0")
        elif re.fullmatch(r"mask_heads\.\d\.conv_logits\.(weight|bias)", key):
            if t[key].shape[0] == num_classes - 1:
                t[key] = torch.cat([t[key].new_zeros((1, *t[key].shape[1:])), t[key]])
                filled[key + "[0]"] = ("background mask channel (absent in MMDetection 2.x+, "
                                       "never selected) set to 0")


def convert_detection_state_dict(obj: Any, model: HRNetFasterRCNN
                                 ) -> tuple[dict[str, Tensor], LoadReport]:
    """Map a loaded detection checkpoint onto ``model``'s names, strictly.

    Raises :class:`CheckpointError` listing missing, unexpected and mis-shaped keys.
    """
    state = unwrap(obj, _CONTAINERS)
    info = _describe(state)
    mapped = map_keys(state, _mapper(model.cfg.with_mask))
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
    head = head_of(model.cfg)
    if head != "faster_rcnn":
        model_arch = f"{head}_{model_arch}"
    return (f"checkpoint ({info.format}, arch {info.arch or 'unknown'}, {info.num_outputs} "
            f"classes) does not fit the model ({model_arch}, {model.cfg.num_classes} classes):")


def _hints(match: Match) -> list[str]:
    if any("rpn_head.rpn_cls" in k or "cls_logits" in k for k, *_ in match.mismatched):
        return ["the RPN classifier must be sigmoid-based (one channel per anchor)"]
    return []
