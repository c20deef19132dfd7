"""The one strict state-dict matcher behind every checkpoint family.

A family's loader (:mod:`.hrnet`, :mod:`.detection`) finds the state dict in a file
(:func:`unwrap`), renames the file's keys to the model's with its format's :data:`KeyMapper`
(:func:`map_keys`) and compares the result with the model's state dict (:func:`match_state_dict`).
Loading is strict: every model tensor must be filled with the right shape and every file tensor
must be used or known to be irrelevant. Gaps that a format has by construction are filled by
explicit :data:`FillRule` s and reported; anything else makes :meth:`Match.error` list the
missing, unexpected and mis-shaped keys in a :class:`CheckpointError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

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
#: Top-level entries that may hold the state dict, in the order they are looked for.
CONTAINERS: tuple[str, ...] = ("state_dict", "model")
_MAX_LISTED = 20

Mismatch = tuple[str, tuple[int, ...], tuple[int, ...]]


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint for the model; lists the offending keys."""

    def __init__(self, message: str, *, missing: list[str] | None = None,
                 unexpected: list[str] | None = None,
                 mismatched: list[Mismatch] | None = None) -> None:
        super().__init__(message)
        self.missing = missing or []
        self.unexpected = unexpected or []
        self.mismatched = mismatched or []


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
            lines.append(f"filled {len(keys)}: {reason} ({short_list(keys)})")
        for reason, keys in _group(self.ignored).items():
            lines.append(f"ignored {len(keys)}: {reason} ({short_list(keys)})")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _group(d: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, reason in d.items():
        out.setdefault(reason, []).append(k)
    return out


def short_list(keys: Sequence[str], n: int = 3) -> str:
    """The first ``n`` keys, comma-separated, and how many more there are."""
    return ", ".join(keys[:n]) + (f", ... {len(keys) - n} more" if len(keys) > n else "")


# --------------------------------------------------------------------------------------------
# Unwrapping


@dataclass
class StateDict:
    """A file's state dict with its wrapping taken off."""

    entries: dict[Any, Any]  # keys without the DataParallel prefix
    prefix: str  # the stripped DataParallel prefix ('module.'), or ''
    wrapping: list[str]  # how the state dict was wrapped, for the report
    ignored: dict[str, str]  # top-level entries known to hold no weights -> why
    unknown: list[str]  # other top-level entries


def unwrap(obj: Any, containers: Sequence[str] = CONTAINERS) -> StateDict:
    """Find the state dict of a loaded checkpoint: the first of ``containers`` that is a dict
    (its siblings are sorted into known and unknown top-level entries), else ``obj`` itself; a
    DataParallel ``module.`` prefix on every key is stripped. Raises :class:`CheckpointError`
    when there is no dict or no tensor."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"not a checkpoint: a {type(obj).__name__}, expected a dict")
    wrapping: list[str] = []
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    container = next((c for c in containers if isinstance(obj.get(c), Mapping)), None)
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
                              f"(top-level keys: {short_list(list(obj), 8)})")
    prefix = ""
    if all(isinstance(k, str) and k.startswith("module.") for k in sd):
        prefix = "module."
        sd = {k[len(prefix):]: v for k, v in sd.items()}
        wrapping.append("'module.' prefix (DataParallel)")
    return StateDict(sd, prefix, wrapping, ignored, unknown)


# --------------------------------------------------------------------------------------------
# Key mapping


@dataclass(frozen=True)
class Ignored:
    """A key mapper's verdict that a file entry is known to be irrelevant, and why."""

    reason: str


#: A format's renaming: file key (unwrapped) -> model key, :class:`Ignored`, or None (unknown).
KeyMapper = Callable[[str], "str | Ignored | None"]


@dataclass
class MappedKeys:
    """A state dict under the model's key names."""

    tensors: dict[str, Tensor]  # model key -> tensor
    sources: dict[str, str]  # model key -> file key
    ignored: dict[str, str]  # file key (or top-level entry) -> why it is not needed
    unexpected: list[str]  # file entries nothing maps


def map_keys(sd: StateDict, mapper: KeyMapper | None) -> MappedKeys:
    """Rename every tensor of ``sd`` with ``mapper`` (None: a format without a mapping, so every
    tensor is unexpected). Non-tensors, unknown keys and a second file key for one model key are
    unexpected: a loader never picks one of two tensors silently."""
    tensors: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    ignored = dict(sd.ignored)
    unexpected = [f"{k} (top-level entry)" for k in sd.unknown]
    for k, v in sd.entries.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            unexpected.append(f"{k} (not a tensor: {type(v).__name__})")
            continue
        file_key = sd.prefix + k
        target = mapper(k) if mapper else None
        if isinstance(target, Ignored):
            ignored[file_key] = target.reason
        elif target is None:
            unexpected.append(file_key)
        elif target in tensors:  # e.g. v0.6 and 1.x names of one neck conv: never pick silently
            unexpected.append(f"{file_key} (duplicate of {sources[target]})")
        else:
            tensors[target] = v
            sources[target] = file_key
    return MappedKeys(tensors, sources, ignored, unexpected)


# --------------------------------------------------------------------------------------------
# Matching

#: A model key the file lacks by construction -> why zeros are exact there (None: not this rule).
FillRule = Callable[[str, Mapping[str, Tensor]], "str | None"]


def fill_num_batches_tracked(key: str, tensors: Mapping[str, Tensor]) -> str | None:
    """BatchNorm counters: older files lack them, and inference never reads them."""
    if key.endswith("num_batches_tracked"):
        return "num_batches_tracked absent from file, set to 0 (unused at inference)"
    return None


@dataclass
class Match:
    """The outcome of :func:`match_state_dict`."""

    mapped: MappedKeys
    state_dict: dict[str, Tensor]  # what load_state_dict(strict=True) gets
    filled: dict[str, str]  # model key -> why it was filled
    missing: list[str]
    unexpected: list[str]
    mismatched: list[Mismatch]  # (model key, file shape, model shape)

    @property
    def complete(self) -> bool:
        """Every model tensor filled, every file tensor used or ignored, every shape right."""
        return not (self.missing or self.unexpected or self.mismatched)

    def error(self, header: str, hints: Iterable[str] = ()) -> CheckpointError:
        """The :class:`CheckpointError` of an incomplete match: ``header`` (what the file and
        the model are), the offending keys (at most 20 per kind), then ``hints``."""
        lines = [header]
        for title, items in (("missing keys", self.missing),
                             ("unexpected keys", self.unexpected),
                             ("mis-shaped keys (file vs model)",
                              [f"{k}: {list(a)} vs {list(b)}" for k, a, b in self.mismatched])):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {i}" for i in items[:_MAX_LISTED]]
                if len(items) > _MAX_LISTED:
                    lines.append(f"    ... {len(items) - _MAX_LISTED} more")
        lines += [f"  {hint}" for hint in hints]
        return CheckpointError("\n".join(lines), missing=self.missing,
                               unexpected=self.unexpected, mismatched=self.mismatched)

    def report(self, info: CheckpointInfo, warnings: Iterable[str] = ()) -> LoadReport:
        """The :class:`LoadReport` of a complete match."""
        sd, sources = self.state_dict, self.mapped.sources
        return LoadReport(info=info, loaded=len(sd) - sum(k in sd for k in self.filled),
                          renamed=sum(1 for k in sd if k in sources and sources[k] != k),
                          filled=self.filled, ignored=dict(self.mapped.ignored),
                          warnings=list(warnings))


def match_state_dict(model: nn.Module, mapped: MappedKeys, *,
                     fill_rules: Sequence[FillRule] = (fill_num_batches_tracked,),
                     filled: Mapping[str, str] | None = None) -> Match:
    """Compare ``mapped`` with ``model.state_dict()``, strictly.

    A model key the file lacks is filled with zeros when one of ``fill_rules`` says why that is
    exact, else it is missing; ``filled`` holds fills the loader already made (recorded first).
    """
    expected = model.state_dict()
    out: dict[str, Tensor] = {}
    fills = dict(filled or {})
    missing: list[str] = []
    mismatched: list[Mismatch] = []
    for key, ref in expected.items():
        if key in mapped.tensors:
            t = mapped.tensors[key]
            if tuple(t.shape) != tuple(ref.shape):
                mismatched.append((key, tuple(t.shape), tuple(ref.shape)))
            out[key] = t
            continue
        reasons = (rule(key, mapped.tensors) for rule in fill_rules)
        reason = next((r for r in reasons if r), None)
        if reason:
            out[key] = torch.zeros_like(ref)
            fills[key] = reason
        else:
            missing.append(key)
    unexpected = list(mapped.unexpected)
    unexpected += [f"{mapped.sources[k]} (-> {k})" if mapped.sources[k] != k else k
                   for k in mapped.tensors if k not in expected]
    return Match(mapped, out, fills, missing, unexpected, mismatched)
