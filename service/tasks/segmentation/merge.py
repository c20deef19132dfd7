"""Segmentation merge: the passes' logits -> the label map, in the official order.

Merge: logits bilinearly upsampled to the pass's input size (``align_corners`` of the model), the
flipped pass flipped back (LIP: left/right channels swapped) and averaged *before* ``exp``, windows
count-averaged, cropped, resized to the source size, summed over scales; LIP's sum is finally
resized to the original size; the label is the argmax.

Shortcuts (exact up to float rounding): bilinear resampling is linear and mirror-symmetric, so the
flip average is taken on the 1/4-resolution logits before one upsample; only the cropped part of an
upsampled pass is computed; a single whole-image pass at the original size skips ``exp``
(monotonic) and, for labels alone, takes the argmax inside the upsampling loop
(:func:`~service.tasks.segmentation.scores.upsampled_labels`).

The arithmetic runs in blocks of rows (:mod:`~service.tasks.segmentation.scores`); many classes
are split into channel chunks with a running argmax, and the row blocks, being independent, run on
the gateway's CPU pool (:mod:`service.runtime.cpu`). With several scales the same merge may begin
while the passes run (:mod:`~service.tasks.segmentation.merge_early`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.contract import LOGITS
from service.imaging.resize import axis_coeffs, band
from service.runtime.cpu import parallel_map
from service.tasks.segmentation.plan import SegPlan
from service.tasks.segmentation.scores import (
    BLOCK_BYTES, Resample, RunningArgmax, ScaleWork, block_rows, gemm_safe, prepare_scale,
    region_logits, source_labels, source_rows, upsampled_labels, work_bytes_per_channel,
)


# Bytes of float32 1/4-resolution work of one channel chunk, all scales (LIP: plus its
# source-size score map); more channels than fit are merged in chunks with a running argmax.
# Chunk size buys no time: 2048x1024 at 6 scales + flip, chunks of 5 vs 16 of the 19 channels
# took 0.88 vs 0.94 s (medians of 5, one run) and peaked at 368 vs 577 MiB above the logits.
CHUNK_BUDGET = 128 * 1024 * 1024


@dataclass
class MergeResult:
    labels: np.ndarray  # (H, W) class index: int32 here, uint8 from the merge graph
    confidence: np.ndarray | None  # (H, W) float32: max score / sum of scores (0..1)


def _bytes_per_channel(plan: SegPlan) -> int:
    """Memory per channel: every scale's prepared regions (the same count as the early merge's),
    plus LIP's whole source-size score map."""
    lip = plan.source_size != plan.original_size
    return max(1, sum(work_bytes_per_channel(plan, sp) for sp in plan.scales)
               + (4 * plan.source_size[0] * plan.source_size[1] if lip else 0))


def merge(plan: SegPlan, outputs: list[dict[str, np.ndarray]]) -> MergeResult:
    """The task's merge step: the passes' ``logits`` -> labels (and confidence if planned)."""
    return merge_segmentation(plan, [o[LOGITS] for o in outputs])


def merge_segmentation(
    plan: SegPlan,
    logits: list[np.ndarray],
    *,
    with_confidence: bool | None = None,
    memory_budget: int = CHUNK_BUDGET,
    block_bytes: int = BLOCK_BYTES,
) -> MergeResult:
    """Combine the passes' logits (each ``(C, h/4, w/4)``, plan order) into the label map.

    Row blocks of about ``block_bytes`` (:mod:`~service.tasks.segmentation.scores`); channel chunks keep the
    prepared 1/4-resolution work within ``memory_budget``. ``with_confidence`` defaults to the
    plan's ``confidence``.
    """
    if with_confidence is None:
        with_confidence = plan.confidence
    n_cls = logits[0].shape[0]
    H, W = plan.original_size
    Hs, Ws = plan.source_size
    sp0 = plan.scales[0]
    fast = (
        len(plan.scales) == 1 and sp0.windows is None and sp0.size == plan.source_size
        and plan.source_size == plan.original_size
    )
    lip = plan.source_size != plan.original_size
    chunk = max(1, min(n_cls, memory_budget // _bytes_per_channel(plan)))

    firsts = [[plan.region_first(sp, r) for r in range(sp.n_regions)] for sp in plan.scales]
    flat_logits = parallel_map(lambda i: region_logits(plan, logits, i), sum(firsts, []))
    if fast and not with_confidence:  # one region: its (flip-averaged) logits
        lg = flat_logits[0]
        if math.isfinite(float(lg.min())) and math.isfinite(float(lg.max())):
            ac = plan.align_corners
            ch = axis_coeffs(lg.shape[1], sp0.pass_size[0], ac).head(H)  # the pass may be padded
            cw = axis_coeffs(lg.shape[2], sp0.pass_size[1], ac).head(W)
            return MergeResult(labels=upsampled_labels(lg, ch, cw, sp0.pass_size[1], ac),
                               confidence=None)
    regions_per_scale, k = [], 0
    for f in firsts:
        regions_per_scale.append(flat_logits[k : k + len(f)])
        k += len(f)
    # GEMMs need every logit finite and every exp-score sum too (see EXP_SAFE).
    finite = gemm_safe([r for regs in regions_per_scale for r in regs], len(plan.scales))
    # One chunk of finite scores: each block's labels by one argmax (argmax_finite).
    acc = RunningArgmax((H, W), with_confidence, softmax=fast, direct=finite and chunk >= n_cls)
    for c0 in range(0, n_cls, chunk):
        c1 = min(n_cls, c0 + chunk)
        works = [prepare_scale(plan, sp, [r[c0:c1] for r in regs], finite)
                 for sp, regs in zip(plan.scales, regions_per_scale)]
        rows = block_rows(plan, [wk.grid for wk in works], c1 - c0, block_bytes)
        if not lip:
            def block(r0: int, c0: int = c0, works: list[ScaleWork] = works) -> None:
                r1 = min(H, r0 + rows)
                if acc.direct:  # all classes, finite: the labels without a running maximum
                    source_labels(works, r0, r1, not fast, acc.labels)
                else:
                    acc.update(source_rows(works, r0, r1, take_exp=not fast), c0, r0)

            parallel_map(block, range(0, H, rows))  # blocks write disjoint rows of acc
            continue
        source = np.empty((c1 - c0, Hs, Ws), np.float32)

        def source_block(r0: int, works: list[ScaleWork] = works) -> None:
            r1 = min(Hs, r0 + rows)
            source[:, r0:r1] = source_rows(works, r0, r1, take_exp=True)

        parallel_map(source_block, range(0, Hs, rows))
        final = Resample.make((Hs, Ws), (H, W), plan.align_corners, finite)
        rows_out = max(1, int(block_bytes // (4 * (c1 - c0) * max(W, Ws) * max(1.0, Hs / H))))

        def final_block(r0: int, c0: int = c0) -> None:
            r1 = min(H, r0 + rows_out)
            a, b = band(final.ch, r0, r1)
            acc.update(final.block(source[:, a:b], a, r0, r1), c0, r0)

        parallel_map(final_block, range(0, H, rows_out))
    return MergeResult(labels=acc.labels, confidence=acc.confidence())
