"""Reading checkpoint files without running code from them, and their SHA-256."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from model_export.checkpoints.matching import CheckpointError


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
