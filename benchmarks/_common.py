"""Helpers shared by the benchmark scripts: model lookup, sample photos, and the bare ONNX Runtime
baseline configured and batched exactly as the gateway's embedded backend and runner do it."""

from __future__ import annotations

import io
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service.backends.embedded import session_options  # noqa: E402
from service.contract import ModelMetadata  # noqa: E402
from service.settings import Settings  # noqa: E402


def first_model(repo: Path, task: str) -> str | None:
    """The first entry of ``task`` in ``repo`` by name, or None."""
    for f in sorted(repo.glob("*/hrnet.json")):
        if ModelMetadata.from_json(f.read_text()).task == task:
            return f.parent.name
    return None


def photo(name: str, w: int, h: int, fmt: str = "PNG") -> tuple[np.ndarray, bytes]:
    """A scikit-image sample photo resized to ``w x h``: the RGB array and its encoded bytes."""
    from skimage import data

    im = Image.fromarray(getattr(data, name)()).convert("RGB").resize((w, h), Image.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return np.asarray(im), buf.getvalue()


def bare_session(onnx_path: Path, settings: Settings):  # -> onnxruntime.InferenceSession
    """A CPU session with the embedded backend's own options, so "bare" differs only by the gateway."""
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), session_options(settings),
                                providers=["CPUExecutionProvider"])


def run_batched(session, passes: list, max_batch: int) -> list[dict[str, np.ndarray]]:
    """Outputs of every pass (batch dim removed), in order, batched by shape like service/runner.py.

    A pass is one array (fed to the first input) or a dict of named arrays.
    """
    first = session.get_inputs()[0].name
    feeds = [p if isinstance(p, dict) else {first: p} for p in passes]
    names = [o.name for o in session.get_outputs()]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(feeds):
        groups[tuple(sorted((k, v.shape) for k, v in f.items()))].append(i)
    out: list[dict[str, np.ndarray] | None] = [None] * len(feeds)
    for idx in groups.values():
        for s in range(0, len(idx), max_batch):
            chunk = idx[s: s + max_batch]
            res = session.run(names, {k: np.stack([feeds[i][k] for i in chunk]) for k in feeds[chunk[0]]})
            for j, i in enumerate(chunk):
                out[i] = {n: r[j] for n, r in zip(names, res)}
    return out  # type: ignore[return-value]
