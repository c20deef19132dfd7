"""Strict loading of HRNetV2p Faster R-CNN checkpoints into :class:`HRNetFasterRCNN`.

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
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from model_export.checkpoints import (
    KNOWN_TOP_LEVEL,
    CheckpointError,
    CheckpointInfo,
    LoadReport,
    _guess_backbone,
    file_sha256,
    read_checkpoint,
)
from model_export.archs import DETECTION_BACKBONES
from model_export.nets.detection import Convention, HRNetFasterRCNN

#: Box arithmetic of each format.
FORMAT_CONVENTION: dict[str, Convention] = {
    "hrnet-det": "legacy", "mmdet-v1": "legacy", "mmdet-v2": "continuous"}
_ORIGIN = {"hrnet-det": "official", "mmdet-v1": "mmdet-legacy", "mmdet-v2": "mmdet"}
_SOURCE = {"hrnet-det": "HRNet-Object-Detection (mmdetection v0.6)", "mmdet-v1": "MMDetection 1.x",
           "mmdet-v2": "MMDetection 2.x/3.x"}
_MAX_LISTED = 20

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


def _state_dict(obj: Any) -> tuple[dict[str, Any], list[str], dict[str, str], list[str]]:
    """(state dict, wrapping notes, ignored top-level entries, unknown top-level entries)."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: a {type(obj).__name__}, expected a dict")
    wrapping: list[str] = []
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    if isinstance(obj.get("state_dict"), Mapping):
        sd = dict(obj["state_dict"])
        wrapping.append("{'state_dict': ...}")
        for k in obj:
            if k != "state_dict":
                (ignored.__setitem__(k, KNOWN_TOP_LEVEL[k]) if k in KNOWN_TOP_LEVEL
                 else unknown.append(k))
    else:
        sd = dict(obj)
    if sd and all(isinstance(k, str) and k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
        wrapping.append("'module.' prefix (DataParallel)")
    return sd, wrapping, ignored, unknown


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
    facts, backbone = _guess_backbone(body)
    arch = next((a for a, b in DETECTION_BACKBONES.items() if b == backbone), None)
    if arch is None and isinstance(body.get("transition1.0.0.weight"), Tensor):
        arch = f"hrnetv2p_w{int(body['transition1.0.0.weight'].shape[0])}"
    return facts, arch


def inspect_detection(obj: Any) -> CheckpointInfo:
    """Format, origin, arch (``hrnetv2p_w{C}``) and class count (with background) of a file."""
    sd, wrapping, _, _ = _state_dict(obj)
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
        fuse_upsample="nearest", wrapping=tuple(wrapping), backbone=facts,
        notes=tuple(notes))


def _map_key(key: str) -> str | tuple[None, str] | None:
    for rx, reason in _IGNORE:
        if re.match(rx, key):
            return (None, reason)
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
    sd, wrapping, ignored, unknown = _state_dict(obj)
    info = inspect_detection(obj)
    fmt = info.format
    tensors: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    unexpected = [f"{k} (top-level entry)" for k in unknown]
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            unexpected.append(f"{k} (not a tensor: {type(v).__name__})")
            continue
        target = _map_key(k)
        if isinstance(target, tuple):
            ignored[k] = target[1]
        elif target is None:
            unexpected.append(k)
        elif target in tensors:  # e.g. v0.6 and 1.x names of one neck conv: never pick silently
            unexpected.append(f"{k} (duplicate of {sources[target]})")
        else:
            tensors[target] = v
            sources[target] = k
    filled: dict[str, str] = {}
    if fmt == "mmdet-v2":
        _remap_v2_classes(tensors, filled, model.cfg.num_classes)

    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    missing: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for key, ref in expected.items():
        if key in tensors:
            if tuple(tensors[key].shape) != tuple(ref.shape):
                mismatched.append((key, tuple(tensors[key].shape), tuple(ref.shape)))
            out[key] = tensors[key]
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(ref)
            filled[key] = "num_batches_tracked absent from file, set to 0 (unused at inference)"
        else:
            missing.append(key)
    unexpected += [f"{sources[k]} (-> {k})" for k in tensors if k not in expected]
    if missing or unexpected or mismatched:
        raise CheckpointError(_message(info, model, missing, unexpected, mismatched),
                              missing=missing, unexpected=unexpected, mismatched=mismatched)
    warnings = []
    want = FORMAT_CONVENTION[fmt]
    if model.cfg.convention != want:
        warnings.append(f"{fmt} weights were trained with {want!r} box arithmetic, the model "
                        f"uses {model.cfg.convention!r}")
    report = LoadReport(info=info, loaded=len(out) - sum(k in out for k in filled),
                        renamed=sum(1 for k in out if sources.get(k, k) != k), filled=filled,
                        ignored=ignored, warnings=warnings)
    return out, report


def _message(info: CheckpointInfo, model: HRNetFasterRCNN, missing: list[str],
             unexpected: list[str],
             mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    lines = [f"checkpoint ({info.format}, arch {info.arch or 'unknown'}, {info.num_outputs} "
             f"classes) does not fit the model ({model.backbone_cfg.name}, "
             f"{model.cfg.num_classes} classes):"]
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("mis-shaped keys (file vs model)",
                          [f"{k}: {list(a)} vs {list(b)}" for k, a, b in mismatched])):
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines += [f"    {i}" for i in items[:_MAX_LISTED]]
            if len(items) > _MAX_LISTED:
                lines.append(f"    ... {len(items) - _MAX_LISTED} more")
    if any("rpn_head.rpn_cls" in k for k, *_ in mismatched) or any(
            "cls_logits" in k for k, *_ in mismatched):
        lines.append("  the RPN classifier must be sigmoid-based (one channel per anchor)")
    return "\n".join(lines)


def load_detection_checkpoint(model: HRNetFasterRCNN, path: str | Path) -> LoadReport:
    """Read ``path``, convert strictly, load into ``model``; the report carries path and sha256."""
    obj = read_checkpoint(path)
    state_dict, report = convert_detection_state_dict(obj, model)
    model.load_state_dict(state_dict, strict=True)
    report.info = replace(report.info, path=str(path), sha256=file_sha256(path))
    return report


def to_checkpoint(model: HRNetFasterRCNN, fmt: str) -> dict[str, Any]:
    """The inverse mapping: ``model`` as a checkpoint of format ``fmt`` (tests, fixtures)."""
    if fmt not in FORMAT_CONVENTION:
        raise ValueError(f"format must be one of {sorted(FORMAT_CONVENTION)}")
    sd: dict[str, Tensor] = {}
    head = "roi_head.bbox_head." if fmt == "mmdet-v2" else "bbox_head."
    neck_red = "neck.reduction_conv.0." if fmt == "hrnet-det" else "neck.reduction_conv.conv."
    for k, v in model.state_dict().items():
        if k.startswith("backbone.body."):
            sd["backbone." + k[len("backbone.body."):]] = v
        elif k.startswith("backbone.neck.reduction_conv.0."):
            sd[neck_red + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.neck.fpn_conv."):
            i, name = k.split(".")[-2:]
            sd[f"neck.fpn_convs.{i}.conv.{name}" if fmt == "mmdet-v2"
               else f"neck.fpn_conv.{i}.{name}"] = v
        else:
            for src, dst in (("rpn.head.conv.0.0.", "rpn_head.rpn_conv."),
                             ("rpn.head.cls_logits.", "rpn_head.rpn_cls."),
                             ("rpn.head.bbox_pred.", "rpn_head.rpn_reg."),
                             ("roi_heads.box_head.fc6.", head + "shared_fcs.0."),
                             ("roi_heads.box_head.fc7.", head + "shared_fcs.1."),
                             ("roi_heads.box_predictor.cls_score.", head + "fc_cls."),
                             ("roi_heads.box_predictor.bbox_pred.", head + "fc_reg.")):
                if k.startswith(src):
                    if fmt == "mmdet-v2" and dst.endswith("fc_cls."):
                        v = torch.cat([v[1:], v[:1]])  # background last
                    elif fmt == "mmdet-v2" and dst.endswith("fc_reg."):
                        v = v[4:]  # no background row
                    sd[dst + k[len(src):]] = v
                    break
            else:
                raise AssertionError(f"unmapped model key {k}")
    sd = {k: v.clone() for k, v in sd.items()}
    if fmt != "hrnet-det":  # later versions drop nothing; v0.6 files may lack the counters
        return {"meta": {"mmdet_version": "2.28.0" if fmt == "mmdet-v2" else "1.2.0"},
                "state_dict": sd}
    return {"meta": {"mmdet_version": "0.6.0"},
            "state_dict": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}}
