"""Strict loading of HRNetV2 checkpoints from the official repositories and from OpenMMLab.

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
* detection (HRNetV2p Faster R-CNN): :func:`detect_format` hands such files to
  :func:`model_export.detection_checkpoints.inspect_detection` (formats ``hrnet-det``, ``mmdet-v1``,
  ``mmdet-v2``), which also converts them; a file that only looks like one stays ``mmdet``.

Loading is strict: every model tensor must be filled with the right shape and every file tensor
must be used or known to be irrelevant; otherwise :class:`CheckpointError` lists the missing,
unexpected and mis-shaped keys. OpenMMLab's HRNet upsamples inside fuse layers by a scale factor
(``fuse_upsample="bilinear_scale"``); it equals the official resize for inputs that are multiples
of 32, and the report says so.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model_export.nets.hrnet import HRNET_CONFIGS

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "Ignored",
    "KEY_MAPPERS",
    "LoadReport",
    "OpaqueObject",
    "convert_state_dict",
    "detect_format",
    "file_sha256",
    "inspect_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
]

# Top-level entries of training checkpoints that hold no network weights.
KNOWN_TOP_LEVEL: dict[str, str] = {
    "meta": "checkpoint metadata",
    "optimizer": "optimizer state",
    "optimizer_state_dict": "optimizer state",
    "lr_scheduler": "scheduler state",
    "scheduler": "scheduler state",
    "param_schedulers": "scheduler state",
    "message_hub": "MMEngine logging state",
    "epoch": "training progress",
    "iter": "training progress",
    "best_mIoU": "training metric",
    "best_nme": "training metric",
    "perf": "training metric",
    "amp": "mixed-precision scaler state",
    "scaler": "mixed-precision scaler state",
}
_CONTAINERS = ("state_dict", "model")
_MAX_LISTED = 20


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint for the model; lists the offending keys."""

    def __init__(self, message: str, *, missing: list[str] | None = None,
                 unexpected: list[str] | None = None,
                 mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] | None = None
                 ) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


class OpaqueObject:
    """Inert stand-in for a non-tensor object of a checkpoint (numpy values, MMEngine buffers).

    :func:`read_checkpoint` substitutes it for classes that ``torch.load(weights_only=True)``
    refuses, so no code from the file runs. Such objects only occur in entries the loader ignores.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return "<OpaqueObject>"


@dataclass(frozen=True)
class Ignored:
    """A key mapper's verdict that a file entry is known to be irrelevant, and why."""

    reason: str


KeyMapper = Callable[[str], "str | Ignored | None"]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint is. ``origin`` uses ``service.contract.WeightsInfo.origin`` values."""

    format: str
    origin: str
    task: str
    arch: str | None
    num_outputs: int | None
    num_tensors: int
    align_corners: bool
    fuse_upsample: str
    wrapping: tuple[str, ...] = ()
    backbone: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    path: str | None = None
    sha256: str | None = None

    def summary(self) -> str:
        """Human-readable, several lines (the CLI's ``inspect`` output)."""
        outputs = {"segmentation": "classes", "landmarks": "landmarks",
                   "detection": "classes"}.get(self.task, "outputs")
        count = str(self.num_outputs) if self.num_outputs is not None else "unknown"
        if self.task == "detection" and self.num_outputs is not None:
            count += f" ({self.num_outputs - 1} + background)"
        lines = []
        if self.path:
            lines.append(f"file:          {self.path}")
        if self.sha256:
            lines.append(f"sha256:        {self.sha256}")
        lines += [
            f"format:        {self.format} (origin {self.origin})",
            f"task:          {self.task}",
            f"arch:          {self.arch or 'unknown'}",
            f"{outputs + ':':<15}{count}",
            f"tensors:       {self.num_tensors}",
            f"wrapping:      {', '.join(self.wrapping) or 'bare state dict'}",
            f"align_corners: {self.align_corners} (default for this origin)",
            f"fuse_upsample: {self.fuse_upsample}",
        ]
        if self.backbone:
            facts = ", ".join(f"{k}={v}" for k, v in self.backbone.items())
            lines.append(f"backbone:      {facts}")
        lines += [f"note:          {n}" for n in self.notes]
        return "\n".join(lines)


@dataclass
class LoadReport:
    """How a checkpoint filled a model."""

    info: CheckpointInfo
    loaded: int
    renamed: int
    filled: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable account: counts, fills grouped by reason, ignored entries, warnings."""
        lines = [f"{self.info.format}: {self.loaded} tensors loaded ({self.renamed} renamed)"]
        for reason, keys in _group(self.filled).items():
            lines.append(f"filled {len(keys)}: {reason} ({_short(keys)})")
        for reason, keys in _group(self.ignored).items():
            lines.append(f"ignored {len(keys)}: {reason} ({_short(keys)})")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _group(d: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, reason in d.items():
        out.setdefault(reason, []).append(k)
    return out


def _short(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------
# Reading files


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint file onto the CPU without running code from it.

    Uses ``torch.load(weights_only=True)``. When a zip-format file holds objects outside the
    weights-only allow-list (numpy values or MMEngine logging buffers in ``meta`` /
    ``message_hub``), those classes are replaced by :class:`OpaqueObject` and the load retried.
    Raises :class:`CheckpointError` for a missing, unreadable or non-dict file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - unpicklers fail in many ways on foreign bytes
        if not zipfile.is_zipfile(path):
            if "GLOBAL" in str(err):  # a pickled class outside the allow-list
                raise CheckpointError(
                    f"{path} is a legacy-format (pre-zip) checkpoint holding objects other than "
                    "tensors; it cannot be read without running code from it. Re-save its state "
                    "dict from a trusted environment.") from err
            raise CheckpointError(f"not a readable PyTorch checkpoint: {path} ({_first_line(err)})"
                                  ) from err
        obj = _load_with_placeholders(path, err)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: {path} holds a {type(obj).__name__}, "
                              "expected a dict of tensors")
    return dict(obj)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _load_with_placeholders(path: Path, first_error: BaseException) -> Any:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise CheckpointError(f"not a readable PyTorch checkpoint: {path} "
                              f"({_first_line(first_error)})") from err
    if not names:
        raise CheckpointError(f"not a readable PyTorch checkpoint: {path} "
                              f"({_first_line(first_error)})") from first_error
    try:
        with torch.serialization.safe_globals([(OpaqueObject, n) for n in names]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"cannot read {path} safely (it holds {', '.join(names)}): "
                              f"{_first_line(err)}") from err


# --------------------------------------------------------------------------------------------
# Key mapping per format


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


@dataclass
class _Parsed:
    info: CheckpointInfo
    tensors: dict[str, Tensor]  # model key -> tensor
    sources: dict[str, str]  # model key -> file key
    ignored: dict[str, str]
    unexpected: list[str]  # file keys nothing maps


def _unwrap(obj: Any) -> tuple[dict[str, Any], str, list[str], dict[str, str], list[str]]:
    """Find the state dict.

    Returns (state dict, stripped DataParallel prefix, wrapping notes, ignored top-level entries,
    unknown top-level entries).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: a {type(obj).__name__}, expected a dict")
    wrapping: list[str] = []
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    container = next((c for c in _CONTAINERS if isinstance(obj.get(c), Mapping)), None)
    if container is not None:
        sd = dict(obj[container])
        wrapping.append(f"{{'{container}': ...}}")
        for k in obj:
            if k == container:
                continue
            if k in KNOWN_TOP_LEVEL:
                ignored[k] = KNOWN_TOP_LEVEL[k]
            else:
                unknown.append(k)
    else:
        sd = dict(obj)
    if not sd or not any(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError("not a checkpoint: no tensors found "
                              f"(top-level keys: {_short(list(obj), 8)})")
    stripped = ""
    if all(isinstance(k, str) and k.startswith("module.") for k in sd):
        stripped = "module."
        sd = {k[len(stripped):]: v for k, v in sd.items()}
        wrapping.append("'module.' prefix (DataParallel)")
    return sd, stripped, wrapping, ignored, unknown


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
                              f"(keys: {_short(sorted({k.split('.')[0] for k in keys}), 10)})")
    if has("model.last_layer.") or has("last_layer."):
        return "official-seg"
    if has("head."):
        return "official-face"
    raise CheckpointError("unrecognised checkpoint: no segmentation head (last_layer.*), "
                          "landmark head (head.*) or OpenMMLab model (backbone.*) keys "
                          f"(first keys: {_short(keys, 5)})")


def _count(keys: list[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def _guess_backbone(sd: Mapping[str, Tensor]) -> tuple[dict[str, Any], str | None]:
    """Backbone shape facts from official-named tensors, and the matching registry name."""
    keys = list(sd)
    try:
        facts: dict[str, Any] = {
            "width": int(sd["transition1.0.0.weight"].shape[0]),
            "layer1_blocks": _count(keys, r"layer1\.(\d+)\.conv1\.weight$"),
            "layer1_width": int(sd["layer1.0.conv1.weight"].shape[0]),
            "modules": tuple(_count(keys, rf"stage{s}\.(\d+)\.") for s in (2, 3, 4)),
            "blocks": tuple(_count(keys, rf"stage{s}\.0\.branches\.0\.(\d+)\.conv1\.weight$")
                            for s in (2, 3, 4)),
        }
    except (KeyError, IndexError):
        return {}, None
    for name, cfg in HRNET_CONFIGS.items():
        stages = (cfg.stage2, cfg.stage3, cfg.stage4)
        if (cfg.stage1.num_blocks[0] == facts["layer1_blocks"]
                and cfg.stage1.num_channels[0] == facts["layer1_width"]
                and cfg.stage2.num_channels[0] == facts["width"]
                and tuple(s.num_modules for s in stages) == facts["modules"]
                and tuple(s.num_blocks[0] for s in stages) == facts["blocks"]):
            return facts, name
    return facts, None


def _num_outputs(fmt: str, tensors: Mapping[str, Tensor], raw: Mapping[str, Any]) -> int | None:
    for key in ("last_layer.3.weight", "head.3.weight"):
        if key in tensors:
            return int(tensors[key].shape[0])
    if fmt == "mmdet":  # class count of the box classifier (legacy files include background)
        for key in ("roi_head.bbox_head.fc_cls.weight", "bbox_head.fc_cls.weight"):
            if isinstance(raw.get(key), Tensor):
                return int(raw[key].shape[0])
    return None


def _parse(obj: Any) -> _Parsed:
    sd, stripped, wrapping, ignored, unknown = _unwrap(obj)
    keys = [k for k in sd if isinstance(k, str)]
    fmt = _classify(keys)
    if fmt == "official-seg" and any(k.startswith("model.") for k in keys):
        wrapping.append("'model.' prefix (training wrapper)")
    mapper = KEY_MAPPERS.get(fmt)
    tensors: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    unexpected = [f"{k} (top-level entry)" for k in unknown]
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            unexpected.append(f"{k} (not a tensor: {type(v).__name__})")
            continue
        target = mapper(k) if mapper else None
        if isinstance(target, Ignored):
            ignored[stripped + k] = target.reason
        elif target is None:
            unexpected.append(stripped + k)
        elif target in tensors:
            unexpected.append(f"{stripped + k} (duplicate of {sources[target]})")
        else:
            tensors[target] = v
            sources[target] = stripped + k
    backbone_src = tensors if mapper else {k[len("backbone."):]: v for k, v in sd.items()
                                           if isinstance(k, str) and k.startswith("backbone.")}
    facts, arch = _guess_backbone(backbone_src)
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
        num_outputs=_num_outputs(fmt, tensors, sd),
        num_tensors=sum(isinstance(v, Tensor) for v in sd.values()),
        align_corners=False,
        fuse_upsample={"official": "bilinear", "mmdet": "nearest"}.get(origin, "bilinear_scale"),
        wrapping=tuple(wrapping),
        backbone=facts,
        notes=tuple(notes),
    )
    return _Parsed(info, tensors, sources, ignored, unexpected)


# --------------------------------------------------------------------------------------------
# Public API


def detect_format(obj: Any) -> CheckpointInfo:
    """Recognise a loaded checkpoint: format, task, arch (from tensor shapes) and output count."""
    info = _parse(obj).info
    if info.task == "detection":
        # Lazy: detection_checkpoints imports this module.
        from model_export.detection_checkpoints import inspect_detection

        try:
            return inspect_detection(obj)
        except CheckpointError:
            return info  # detection-like keys but no two-stage layout: say what we can
    return info


def convert_state_dict(obj: Any, model: nn.Module) -> tuple[dict[str, Tensor], LoadReport]:
    """Map a loaded checkpoint onto ``model``'s state-dict names, strictly.

    Returns a state dict that ``model.load_state_dict(..., strict=True)`` accepts and the report
    of what was renamed, filled and ignored. Raises :class:`CheckpointError` listing missing,
    unexpected and mis-shaped keys, or naming a task mismatch.
    """
    parsed = _parse(obj)
    info = parsed.info
    model_task = getattr(model, "task", None)
    if model_task is not None and model_task != info.task:
        raise CheckpointError(f"wrong task: the checkpoint is a {info.task} model ({info.format}"
                              f", arch {info.arch or 'unknown'}), the model is {model_task}")
    if info.format not in KEY_MAPPERS:
        raise CheckpointError(f"no key mapping for format {info.format!r} (task {info.task}); "
                              f"supported: {', '.join(KEY_MAPPERS)}")

    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    filled: dict[str, str] = {}
    missing: list[str] = []
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    for key, ref in expected.items():
        if key in parsed.tensors:
            t = parsed.tensors[key]
            if tuple(t.shape) != tuple(ref.shape):
                mismatched.append((key, tuple(t.shape), tuple(ref.shape)))
            out[key] = t
        elif key.endswith("num_batches_tracked"):
            out[key] = torch.zeros_like(ref)
            filled[key] = "num_batches_tracked absent from file, set to 0 (unused at inference)"
        elif (info.format == "mmseg" and key == "last_layer.0.bias"
              and "last_layer.0.weight" in parsed.tensors):
            out[key] = torch.zeros_like(ref)
            filled[key] = ("MMSeg ConvModule conv has no bias (BN follows); zero bias is the "
                           "exact equivalent")
        else:
            missing.append(key)
    unexpected = list(parsed.unexpected)
    unexpected += [f"{parsed.sources[k]} (-> {k})" if parsed.sources[k] != k else k
                   for k in parsed.tensors if k not in expected]

    if missing or unexpected or mismatched:
        raise CheckpointError(_error_message(info, model, missing, unexpected, mismatched),
                              missing=missing, unexpected=unexpected, mismatched=mismatched)

    warnings = []
    model_fuse = getattr(model, "fuse_upsample", None)
    if model_fuse is not None and model_fuse != info.fuse_upsample:
        warnings.append(f"{info.origin} weights were trained with fuse_upsample="
                        f"{info.fuse_upsample!r}, the model uses {model_fuse!r}: outputs agree "
                        "only for inputs that are multiples of 32")
    renamed = sum(1 for k in out if k in parsed.sources and parsed.sources[k] != k)
    report = LoadReport(info=info, loaded=len(out) - len(filled), renamed=renamed,
                        filled=filled, ignored=dict(parsed.ignored), warnings=warnings)
    return out, report


def _error_message(info: CheckpointInfo, model: nn.Module, missing: list[str],
                   unexpected: list[str],
                   mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]) -> str:
    cfg = getattr(model, "cfg", None)
    model_arch = getattr(cfg, "name", type(model).__name__)
    lines = [f"checkpoint ({info.format}, arch {info.arch or 'unknown'}, "
             f"{info.num_outputs} outputs) does not fit the model ({model_arch}, "
             f"{getattr(model, 'num_outputs', '?')} outputs):"]

    def block(title: str, items: list[str]) -> None:
        if items:
            lines.append(f"  {title} ({len(items)}):")
            lines.extend(f"    {i}" for i in items[:_MAX_LISTED])
            if len(items) > _MAX_LISTED:
                lines.append(f"    ... {len(items) - _MAX_LISTED} more")

    block("missing keys", missing)
    block("unexpected keys", unexpected)
    block("mis-shaped keys (file vs model)",
          [f"{k}: {list(a)} vs {list(b)}" for k, a, b in mismatched])
    hint = _HEAD_HINT.get(info.format)
    if hint and any(hint[0] in u for u in unexpected):
        lines.append(f"  {hint[1]}")
    return "\n".join(lines)


def load_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Read ``path``, convert it strictly and load it into ``model``; returns the report."""
    obj = read_checkpoint(path)
    state_dict, report = convert_state_dict(obj, model)
    model.load_state_dict(state_dict, strict=True)
    report.info = replace(report.info, path=str(path), sha256=file_sha256(path))
    return report


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read ``path`` and say what it is (format, task, arch, outputs, sha256)."""
    info = detect_format(read_checkpoint(path))
    return replace(info, path=str(path), sha256=file_sha256(path))
