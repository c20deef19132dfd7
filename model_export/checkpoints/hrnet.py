"""HRNetV2 segmentation and landmark checkpoints from the official repositories and OpenMMLab.

Recognised formats (``CheckpointInfo.format``):

* ``official-seg``: HRNet-Semantic-Segmentation releases. Network keys carry ``model.`` (saved from
  the training wrapper); ``loss.*`` entries (criterion class weights) are ignored; missing BatchNorm
  ``num_batches_tracked`` entries (older files) are filled with 0.
* ``official-face``: HRNet-Facial-Landmark-Detection releases, a bare state dict or
  ``{"state_dict": ...}``, with or without DataParallel's ``module.`` prefix.
* ``mmseg``: MMSegmentation ``EncoderDecoder`` with HRNet + ``FCNHead`` (``num_convs=1``,
  ``kernel_size=1``, ``concat_input=False``). ``decode_head.convs.0.conv`` -> ``last_layer.0``
  (MMCV's ConvModule has no conv bias when a norm follows: the bias is filled with zeros, which is
  exact), ``decode_head.convs.0.bn`` -> ``last_layer.1``, ``decode_head.conv_seg`` ->
  ``last_layer.3``; ``auxiliary_head.*`` is ignored.
* ``mmpose``: MMPose HRNetV2 face models, 0.x ``keypoint_head.final_layer.{0,1,3}`` of
  ``TopdownHeatmapSimpleHead`` (``num_conv_layers=1``) or 1.x ``head.conv_layers.{0,1}`` +
  ``head.final_layer`` of ``HeatmapHead`` (``conv_out_channels=(270,)``).
* ``mmdet``: an OpenMMLab detector; :func:`model_export.checkpoints.detect_format` hands such
  files to :mod:`model_export.checkpoints.detection`, and one that is not a two-stage HRNetV2p
  Faster R-CNN stays ``mmdet`` (recognised, not converted).

OpenMMLab's HRNet upsamples inside fuse layers by a scale factor
(``fuse_upsample="bilinear_scale"``); it equals the official resize for inputs that are multiples
of 32, and the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from model_export.checkpoints.backbone import guess_backbone
from model_export.checkpoints.matching import (
    CheckpointError,
    CheckpointInfo,
    Ignored,
    KeyMapper,
    LoadReport,
    MappedKeys,
    fill_num_batches_tracked,
    map_keys,
    match_state_dict,
    short_list,
    unwrap,
)


def _prefix_mapper(table: Mapping[str, str], ignore: Mapping[str, str]) -> KeyMapper:
    """Map by longest matching prefix in ``table``; ``ignore`` prefixes give :class:`Ignored`."""
    prefixes = sorted(table, key=len, reverse=True)

    def mapper(key: str) -> str | Ignored | None:
        for p, reason in ignore.items():
            if key.startswith(p):
                return Ignored(reason)
        for p in prefixes:
            if key.startswith(p):
                return table[p] + key[len(p):]
        return None

    return mapper


_MM_IGNORE = {"data_preprocessor.": "data preprocessor buffers (normalisation constants)"}

#: format name -> function mapping a (wrapper-free) file key to a model key.
KEY_MAPPERS: dict[str, KeyMapper] = {
    "official-seg": _prefix_mapper(
        {"model.": "", "": ""}, {"loss.": "criterion class weights (loss.*)"}),
    "official-face": _prefix_mapper({"": ""}, {}),
    "mmseg": _prefix_mapper(
        {
            "backbone.": "",
            "decode_head.convs.0.conv.": "last_layer.0.",
            "decode_head.convs.0.bn.": "last_layer.1.",
            "decode_head.conv_seg.": "last_layer.3.",
        },
        {"auxiliary_head.": "auxiliary head (training only)", **_MM_IGNORE}),
    "mmpose": _prefix_mapper(
        {
            "backbone.": "",
            # MMPose 0.x TopdownHeatmapSimpleHead: final_layer = conv, BN, ReLU, conv.
            "keypoint_head.final_layer.0.": "head.0.",
            "keypoint_head.final_layer.1.": "head.1.",
            "keypoint_head.final_layer.3.": "head.3.",
            # MMPose 1.x HeatmapHead: conv_layers = conv, BN, ReLU; final_layer = conv.
            "head.conv_layers.0.": "head.0.",
            "head.conv_layers.1.": "head.1.",
            "head.final_layer.": "head.3.",
        },
        _MM_IGNORE),
}

_ORIGIN = {"official-seg": "official", "official-face": "official", "mmseg": "mmseg",
           "mmpose": "mmpose", "mmdet": "mmdet"}
_TASK = {"official-seg": "segmentation", "official-face": "landmarks", "mmseg": "segmentation",
         "mmpose": "landmarks", "mmdet": "detection"}
_HEAD_HINT = {
    "mmseg": ("decode_head.", "the MMSegmentation decode head is not the FCNHead(num_convs=1, "
              "kernel_size=1, concat_input=False) of HRNetV2 and cannot be mapped exactly"),
    "mmpose": ("head", "the MMPose head is not the HRNetV2 face head (one 1x1 conv + BN + ReLU, "
               "then a 1x1 conv, no deconvolutions) and cannot be mapped exactly"),
}


def _mmseg_conv_bias(key: str, tensors: Mapping[str, Tensor]) -> str | None:
    if key == "last_layer.0.bias" and "last_layer.0.weight" in tensors:
        return "MMSeg ConvModule conv has no bias (BN follows); zero bias is the exact equivalent"
    return None


def _classify(keys: list[str]) -> str:
    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("backbone."):
        if has("decode_head."):
            return "mmseg"
        if has("keypoint_head.") or has("head."):
            return "mmpose"
        if has("neck.") or has("rpn_head.") or has("roi_head.") or has("bbox_head."):
            return "mmdet"
        raise CheckpointError("unrecognised OpenMMLab checkpoint: a backbone but no known head "
                              f"(keys: {short_list(sorted({k.split('.')[0] for k in keys}), 10)})")
    if has("model.last_layer.") or has("last_layer."):
        return "official-seg"
    if has("head."):
        return "official-face"
    raise CheckpointError("unrecognised checkpoint: no segmentation head (last_layer.*), "
                          "landmark head (head.*) or OpenMMLab model (backbone.*) keys "
                          f"(first keys: {short_list(keys, 5)})")


def _num_outputs(fmt: str, tensors: Mapping[str, Tensor], raw: Mapping[str, Any]) -> int | None:
    for key in ("last_layer.3.weight", "head.3.weight"):
        if key in tensors:
            return int(tensors[key].shape[0])
    if fmt == "mmdet":  # class count of the box classifier (legacy files include background)
        for key in ("roi_head.bbox_head.fc_cls.weight", "bbox_head.fc_cls.weight"):
            if isinstance(raw.get(key), Tensor):
                return int(raw[key].shape[0])
    return None


def _parse(obj: Any) -> tuple[CheckpointInfo, MappedKeys]:
    sd = unwrap(obj)
    keys = [k for k in sd.entries if isinstance(k, str)]
    fmt = _classify(keys)
    if fmt == "official-seg" and any(k.startswith("model.") for k in keys):
        sd.wrapping.append("'model.' prefix (training wrapper)")
    mapper = KEY_MAPPERS.get(fmt)
    mapped = map_keys(sd, mapper)
    backbone_src = mapped.tensors if mapper else {
        k[len("backbone."):]: v for k, v in sd.entries.items()
        if isinstance(k, str) and k.startswith("backbone.")}
    facts, arch = guess_backbone(backbone_src)
    origin = _ORIGIN[fmt]
    notes = []
    if fmt == "official-seg":
        notes.append("align_corners cannot be read from weights: pytorch-v1.1 and the HRNet-OCR "
                     "W48 Cityscapes/LIP/PASCAL-Context configs use False; HRNet-OCR ADE20K, "
                     "COCO-Stuff and OCR models use True")
    if origin in ("mmseg", "mmpose"):
        notes.append("OpenMMLab HRNet upsamples by a scale factor inside fuse layers "
                     "(fuse_upsample='bilinear_scale'); identical to the official resize when "
                     "the input is a multiple of 32")
    if fmt == "mmdet":
        notes.append("detection checkpoints are recognised but not converted by this module")
    info = CheckpointInfo(
        format=fmt,
        origin=origin,
        task=_TASK[fmt],
        arch=arch,
        num_outputs=_num_outputs(fmt, mapped.tensors, sd.entries),
        num_tensors=sum(isinstance(v, Tensor) for v in sd.entries.values()),
        align_corners=False,
        fuse_upsample={"official": "bilinear", "mmdet": "nearest"}.get(origin, "bilinear_scale"),
        wrapping=tuple(sd.wrapping),
        backbone=facts,
        notes=tuple(notes),
    )
    return info, mapped


def inspect_hrnet(obj: Any) -> CheckpointInfo:
    """Recognise a loaded checkpoint: format, task, arch (from tensor shapes) and output count."""
    return _parse(obj)[0]


def convert_state_dict(obj: Any, model: nn.Module) -> tuple[dict[str, Tensor], LoadReport]:
    """Map a loaded HRNet checkpoint onto ``model``'s state-dict names, strictly.

    Returns a state dict that ``model.load_state_dict(..., strict=True)`` accepts and the report
    of what was renamed, filled and ignored. Raises :class:`CheckpointError` listing missing,
    unexpected and mis-shaped keys, or naming a task mismatch.
    """
    info, mapped = _parse(obj)
    model_task = getattr(model, "task", None)
    if model_task is not None and model_task != info.task:
        raise CheckpointError(f"wrong task: the checkpoint is a {info.task} model ({info.format}"
                              f", arch {info.arch or 'unknown'}), the model is {model_task}")
    if info.format not in KEY_MAPPERS:
        raise CheckpointError(f"no key mapping for format {info.format!r} (task {info.task}); "
                              f"supported: {', '.join(KEY_MAPPERS)}")
    rules = [fill_num_batches_tracked]
    if info.format == "mmseg":
        rules.append(_mmseg_conv_bias)
    match = match_state_dict(model, mapped, fill_rules=rules)
    if not match.complete:
        cfg = getattr(model, "cfg", None)
        model_arch = getattr(cfg, "name", type(model).__name__)
        header = (f"checkpoint ({info.format}, arch {info.arch or 'unknown'}, "
                  f"{info.num_outputs} outputs) does not fit the model ({model_arch}, "
                  f"{getattr(model, 'num_outputs', '?')} outputs):")
        hint = _HEAD_HINT.get(info.format)
        hints = [hint[1]] if hint and any(hint[0] in u for u in match.unexpected) else []
        raise match.error(header, hints)
    warnings = []
    model_fuse = getattr(model, "fuse_upsample", None)
    if model_fuse is not None and model_fuse != info.fuse_upsample:
        warnings.append(f"{info.origin} weights were trained with fuse_upsample="
                        f"{info.fuse_upsample!r}, the model uses {model_fuse!r}: outputs agree "
                        "only for inputs that are multiples of 32")
    return match.state_dict, match.report(info, warnings)
