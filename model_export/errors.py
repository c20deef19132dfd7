"""The errors an export stops with (besides ``checkpoints.matching.CheckpointError``)."""

from __future__ import annotations


class ExportError(RuntimeError):
    """A request that cannot be exported (bad combination of options, wrong checkpoint...)."""


class ParityError(RuntimeError):
    """ONNX Runtime disagrees with PyTorch beyond the thresholds."""
