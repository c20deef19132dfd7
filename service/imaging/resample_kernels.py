"""Compiled loops of the logit resampling: bilinear rows (two taps each), bilinear rows fused
with the argmax over classes, and the argmax over classes alone.

numpy has no 2-tap row filter: the merge used banded GEMMs (and gathers where values may be
infinite), which read every row of a band and wrote each block of scores before the argmax read
it again. These loops (numba, compiled once per process, the GIL released) read only the two
taps of each output row and, for labels, keep the best class per pixel as they go:

* :func:`rows` computes ``x[i0] * w0 + x[i1] * w1`` in float32, the arithmetic of the gathers
  and of ``F.interpolate`` (no fused multiply-add), so ``inf`` and ``nan`` spread exactly as
  there. 2048x1024 at 6 scales + flip, the merge alone: 0.74x the time of the GEMMs.
* :func:`rows_argmax` gives ``argmax`` over classes of those rows (ties to the lower class)
  without storing them: a single 2048x1024 pass's merge took 5.5 ms against 31-37 ms for the
  GEMMs plus ``reduceArgMax``, the same labels. For finite values only (see its docstring).
* :func:`argmax` is that loop's argmax without the taps, for the merge's blocks of summed
  scores: 19 x 400 x 600 in 0.67 ms against 5.2 ms (smooth photo logits) to 11.9 ms (noise)
  for OpenCV's ``reduceArgMax`` and 14 ms for ``np.argmax``, one thread; the same labels.
  :func:`sweep` keeps that argmax running over chunks of classes (merges in chunks, and those
  that want a confidence), where numpy made three passes per class.

The loops are compiled on first use or by :func:`compile_all` (1.1 s for the four, 0.84 s for
the two before the argmax and the sweep; 4 MiB more peak memory; the gateway calls
it at start-up, before it reports ready); nothing is cached on disk, so read-only images work.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

_lock = threading.Lock()
_compiled: dict[str, Callable[..., None]] = {}


def _build() -> dict[str, Callable[..., None]]:
    """Compile the loops for C-contiguous float32 data and int64 / float32 coefficient arrays
    (read-only accepted: the coefficient tables are shared and frozen)."""
    import numba
    from numba import types as t

    f1 = t.Array(t.float32, 1, "C", readonly=True)
    i1 = t.Array(t.int64, 1, "C", readonly=True)
    f3 = t.Array(t.float32, 3, "C", readonly=True)
    opts = {"nogil": True, "cache": False, "boundscheck": False, "fastmath": False}

    @numba.njit(t.void(f3, i1, i1, f1, f1, t.int64, t.int64, t.int64, t.Array(t.float32, 3, "C")),
                **opts)
    def rows_loop(x: Any, i0: Any, i1: Any, w0: Any, w1: Any, start: int, stop: int,
                  offset: int, out: Any) -> None:  # pragma: no cover - compiled
        for c in range(x.shape[0]):
            for y in range(start, stop):
                a, b, p, q = i0[y] - offset, i1[y] - offset, w0[y], w1[y]
                for j in range(x.shape[2]):
                    out[c, y - start, j] = x[c, a, j] * p + x[c, b, j] * q

    @numba.njit(t.void(f3, i1, i1, f1, f1, t.int64, t.int64, t.int64, t.Array(t.int32, 2, "C")),
                **opts)
    def argmax_loop(x: Any, i0: Any, i1: Any, w0: Any, w1: Any, start: int, stop: int,
                    offset: int, out: Any) -> None:  # pragma: no cover - compiled
        # Class by class over a whole row, the running maximum in a row buffer: the inner loop
        # runs along contiguous memory. (A branch-free select measured 1.3x slower.)
        best = np.empty(x.shape[2], np.float32)
        for y in range(start, stop):
            a, b, p, q = i0[y] - offset, i1[y] - offset, w0[y], w1[y]
            for j in range(x.shape[2]):
                best[j] = x[0, a, j] * p + x[0, b, j] * q
                out[y, j] = 0
            for c in range(1, x.shape[0]):
                for j in range(x.shape[2]):
                    v = x[c, a, j] * p + x[c, b, j] * q
                    if v > best[j]:  # strictly: a tie keeps the lower class
                        best[j] = v
                        out[y, j] = c

    @numba.njit(t.void(f3, t.Array(t.int32, 2, "C")), **opts)
    def classes_loop(x: Any, out: Any) -> None:  # pragma: no cover - compiled
        # argmax_loop without the taps. C-contiguous on purpose: with any-layout arrays the
        # loop is not vectorised and took 8.4 instead of 0.67 ms (19 x 400 x 600).
        best = np.empty(x.shape[2], np.float32)
        for y in range(x.shape[1]):
            for j in range(x.shape[2]):
                best[j] = x[0, y, j]
                out[y, j] = 0
            for c in range(1, x.shape[0]):
                for j in range(x.shape[2]):
                    v = x[c, y, j]
                    if v > best[j]:  # strictly: a tie keeps the lower class
                        best[j] = v
                        out[y, j] = c

    @numba.njit(t.void(f3, t.Array(t.float32, 2, "C"), t.Array(t.int32, 2, "C"), t.int64), **opts)
    def sweep_loop(x: Any, best: Any, out: Any, c0: int) -> None:  # pragma: no cover - compiled
        # A running argmax over chunks of classes: np.greater, np.maximum and a masked store,
        # in one read of each score. NaN spreads into best as np.maximum spreads it (and then
        # no later class wins the pixel).
        for c in range(x.shape[0]):
            for y in range(x.shape[1]):
                for j in range(x.shape[2]):
                    v = x[c, y, j]
                    if v > best[y, j]:
                        best[y, j] = v
                        out[y, j] = c0 + c
                    elif v != v:
                        best[y, j] = v

    return {"rows": rows_loop, "argmax": argmax_loop, "classes": classes_loop, "sweep": sweep_loop}


def _loops() -> dict[str, Callable[..., None]]:
    if not _compiled:
        with _lock:  # one compilation, however many pool threads ask at once
            if not _compiled:
                _compiled.update(_build())
    return _compiled


def compile_all() -> None:
    """Compile the loops now (a first request would otherwise wait ~1 s for them)."""
    _loops()


def _coeffs(i0: np.ndarray, i1: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> tuple:
    return (np.ascontiguousarray(i0, np.int64), np.ascontiguousarray(i1, np.int64),
            np.ascontiguousarray(w0, np.float32), np.ascontiguousarray(w1, np.float32))


def rows(x: np.ndarray, i0: np.ndarray, i1: np.ndarray, w0: np.ndarray, w1: np.ndarray,
         start: int, stop: int, offset: int = 0) -> np.ndarray:
    """Output rows ``[start, stop)`` of a bilinear resample along axis 1 of ``x`` (C, n, W):
    row ``y`` is ``x[:, i0[y] - offset] * w0[y] + x[:, i1[y] - offset] * w1[y]`` (``x`` holds
    input rows ``[offset, offset + n)``), as a new (C, stop - start, W) float32 array. The taps
    must be bilinear ones (non-decreasing, ``i0 <= i1``)."""
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty((x.shape[0], stop - start, x.shape[2]), np.float32)
    if stop > start:
        _check_taps(i0, i1, start, stop, offset, x.shape[1])
        _loops()["rows"](x, *_coeffs(i0, i1, w0, w1), start, stop, offset, out)
    return out


def rows_argmax(x: np.ndarray, i0: np.ndarray, i1: np.ndarray, w0: np.ndarray, w1: np.ndarray,
                start: int, stop: int, out: np.ndarray, offset: int = 0) -> None:
    """Write into rows ``[start, stop)`` of ``out`` (int32, (H, W)) the class index of the
    largest score of :func:`rows` (the same ``offset``), ties to the lower class, as
    ``np.argmax``.

    For finite ``x``: a NaN score would neither win nor lose as ``argmax`` decides it.
    """
    x = np.ascontiguousarray(x, np.float32)
    if out.dtype != np.int32 or not out.flags.c_contiguous or out.shape[1] != x.shape[2]:
        raise ValueError("out must be a C-contiguous int32 (H, W) array as wide as x")
    if x.shape[0] == 0:
        raise ValueError("no classes to take the argmax of")
    if stop > start:
        _check_taps(i0, i1, start, stop, offset, x.shape[1])
        if stop > out.shape[0]:
            raise ValueError(f"rows up to {stop} do not fit {out.shape[0]} output rows")
        _loops()["argmax"](x, *_coeffs(i0, i1, w0, w1), start, stop, offset, out)


def argmax(x: np.ndarray) -> np.ndarray:
    """``np.argmax(x, axis=0)`` of finite float32 scores ``x`` (C, ...) as an int32 array of
    shape ``x.shape[1:]``, ties to the lower class. A view that is not C-contiguous is copied
    first (the loop is vectorised for contiguous rows only).

    For finite ``x``: a NaN score would neither win nor lose as ``argmax`` decides it.
    """
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError("argmax wants (classes, ...) scores with at least one class")
    out = np.empty(x.shape[1:], np.int32)
    if out.size:
        x3 = np.ascontiguousarray(x, np.float32).reshape(x.shape[0], -1, x.shape[-1])
        _loops()["classes"](x3, out.reshape(x3.shape[1:]))
    return out


def sweep(x: np.ndarray, best: np.ndarray, labels: np.ndarray, c0: int) -> None:
    """Fold scores ``x`` (C, ...) of classes ``c0..`` into the running maximum ``best`` (float32)
    and ``labels`` (int32), both C-contiguous of shape ``x.shape[1:]``, in place: a class takes
    a pixel only when strictly above the best so far (ties keep the lower class), and a NaN
    score makes the pixel's best NaN, as ``np.maximum`` does, so that no later class takes it.
    """
    if best.dtype != np.float32 or labels.dtype != np.int32:
        raise ValueError("best must be float32 and labels int32")
    if best.shape != x.shape[1:] or labels.shape != x.shape[1:]:
        raise ValueError(f"best {best.shape} and labels {labels.shape} must be {x.shape[1:]}")
    if not (best.flags.c_contiguous and labels.flags.c_contiguous):
        raise ValueError("best and labels must be C-contiguous")
    if x.size:
        x3 = np.ascontiguousarray(x, np.float32).reshape(x.shape[0], -1, x.shape[-1])
        _loops()["sweep"](x3, best.reshape(x3.shape[1:]), labels.reshape(x3.shape[1:]), int(c0))


def _check_taps(i0: np.ndarray, i1: np.ndarray, start: int, stop: int, offset: int,
                n: int) -> None:
    """The loops do not check bounds: the taps of rows ``[start, stop)`` must lie in ``x``.
    Bilinear taps never decrease along an axis (``i0 <= i1``, both non-decreasing), so the
    first and last rows' taps bound them all."""
    if start < 0 or stop > len(i0) or stop > len(i1):
        raise ValueError(f"rows [{start}, {stop}) are outside the {len(i0)} coefficients")
    lo, hi = int(i0[start]) - offset, int(i1[stop - 1]) - offset
    if lo < 0 or hi >= n:
        raise ValueError(f"taps {lo + offset}..{hi + offset} are outside the input rows "
                         f"[{offset}, {offset + n})")
