"""The segmentation merge begun while the passes run (the task's ``early_merge``): each scale
whose passes are in is added into a whole-image sum on the low-priority background thread, with
the blocks and arithmetic of :func:`~service.tasks.segmentation.merge.merge_segmentation`, and
``finish()`` does what is left after the last pass."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from functools import partial
from typing import Mapping

import numpy as np

from service.contract import LOGITS
from service.runtime.cpu import background, parallel_map
from service.tasks.segmentation.merge import MergeResult, merge_segmentation
from service.tasks.segmentation.plan import SegPlan
from service.tasks.segmentation.scores import (
    BLOCK_BYTES, RunningArgmax, ScaleWork, block_rows, gemm_safe, grid_size, prepare_scale,
    region_logits, source_rows, work_bytes_per_channel,
)


# The whole-image sum of exp-scores an early merge holds (C x H x W float32: 160 MB for 19
# classes at 2048x1024); past this the merge runs after the passes, in blocks, as before.
EARLY_MAX_BYTES = 512 * 1024 * 1024
# The early merge holds one scale's prepared work, all channels, at a time (it has no channel
# chunks): a plan whose widest scale needs more merges after the passes instead.
MEMORY_BUDGET = 384 * 1024 * 1024


class EarlyMerge:
    """A multi-scale merge that runs while the passes still do (the task's ``early_merge``).

    Once every pass of the next scale (plan order) is in, and a later scale is still to come,
    that scale's exp-scores are added into a whole-image sum, block by block, on the background
    thread (:func:`service.runtime.cpu.background`: low priority, on the cycles inference leaves
    idle). :meth:`finish` takes over at once whatever is not in the sum yet (the last scale, the
    scales the background has not reached, the rest of the one it is in: nothing waits on the
    low-priority thread but one block's addition) and takes the argmax.

    The sum runs in the official order with :func:`merge_segmentation`'s blocks and per-block
    arithmetic, so the labels are the same; only the float-safety choice (GEMM or exact gathers,
    ``EXP_SAFE``) is made per scale, the later scales being unknown. A plan with one scale, LIP's
    final resize, too many classes for one channel chunk or a sum over ``EARLY_MAX_BYTES`` just
    collects the outputs and merges them in :meth:`finish`.
    """

    def __init__(self, plan: SegPlan, *, with_confidence: bool | None = None,
                 block_bytes: int = BLOCK_BYTES, memory_budget: int = MEMORY_BUDGET,
                 max_bytes: int = EARLY_MAX_BYTES) -> None:
        self.plan = plan
        self.with_confidence = plan.confidence if with_confidence is None else with_confidence
        self._block_bytes, self._memory_budget, self._max_bytes = block_bytes, memory_budget, max_bytes
        self._scale_of = [k for k, sp in enumerate(plan.scales) for _ in plan.scale_passes(sp)]
        self._missing = [len(plan.scale_passes(sp)) for sp in plan.scales]
        self._early = (len(plan.scales) > 1 and plan.source_size == plan.original_size)
        self._rows = 0  # output rows per block (known with the number of classes)
        self._logits: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()
        self._taken = False  # finish() or close() owns the state from here on
        self._sum: np.ndarray | None = None
        self._added = 0  # scales wholly in the sum
        self._rows_done = 0  # rows of scale ``_added`` already in it
        self._work: ScaleWork | None = None  # scale ``_added``, prepared by the background
        self._submitted = 0
        self._jobs: list[Future[None]] = []  # the background's, in scale order
        self._error: BaseException | None = None
        self._finite = True  # every scale prepared so far GEMM-safe: the sum is finite

    @property
    def sums_early(self) -> bool:
        """Whether the scales are summed as they come (else everything waits for finish)."""
        return self._early

    def add(self, index: int, outputs: dict[str, np.ndarray]) -> None:
        """Pass ``index``'s outputs; hands each completed scale (but the last) to the background."""
        lg = outputs[LOGITS]
        if self._taken:
            return
        if self._early and not self._rows:
            self._decide(lg.shape[0])
        self._logits[index] = lg
        self._missing[self._scale_of[index]] -= 1
        n = len(self.plan.scales)
        while self._early and self._submitted < n - 1 and self._missing[self._submitted] == 0:
            self._jobs.append(background(partial(self._background, self._submitted)))
            self._submitted += 1

    def _decide(self, classes: int) -> None:
        H, W = self.plan.original_size
        # One scale's prepared work (all classes) is held at a time, beside the sum.
        widest = max(work_bytes_per_channel(self.plan, sp) for sp in self.plan.scales)
        if classes * widest > self._memory_budget or 4 * classes * H * W > self._max_bytes:
            self._early = False
            return
        grids = [grid_size(self.plan, sp) for sp in self.plan.scales]
        self._rows = block_rows(self.plan, grids, classes, self._block_bytes)

    def _passes_of(self, k: int) -> range:
        return self.plan.scale_passes(self.plan.scales[k])

    def _regions(self, logits: Mapping[int, np.ndarray], k: int) -> list[np.ndarray]:
        sp = self.plan.scales[k]
        return [region_logits(self.plan, logits, self.plan.region_first(sp, r))
                for r in range(sp.n_regions)]

    def _prepare(self, logits: Mapping[int, np.ndarray], k: int) -> ScaleWork:
        regs = self._regions(logits, k)
        safe = gemm_safe(regs, len(self.plan.scales))
        self._finite = self._finite and safe
        return prepare_scale(self.plan, self.plan.scales[k], regs, safe)

    def _background(self, k: int) -> None:
        """Add scale ``k`` into the sum (scales before it are in: one FIFO thread)."""
        try:
            logits = self._logits  # finish() swaps in a new dict: this one stays whole
            if self._taken:
                return
            work = self._prepare(logits, k)
            H = self.plan.original_size[0]
            with self._lock:
                if self._taken:
                    return
                self._work = work
                for i in self._passes_of(k):
                    logits.pop(i, None)  # now in ``work``
                if self._sum is None:
                    c = work.regions[0].u.shape[0]
                    self._sum = np.empty((c, H, self.plan.original_size[1]), np.float32)
            total = self._sum
            for r0 in range(0, H, self._rows):
                r1 = min(H, r0 + self._rows)
                part = source_rows([work], r0, r1, take_exp=True)
                with self._lock:  # the only wait finish() may have on this thread: one addition
                    if self._taken:
                        return
                    if k == 0:
                        total[:, r0:r1] = part
                    else:
                        total[:, r0:r1] += part
                    self._rows_done = r1
            with self._lock:
                if not self._taken:
                    self._added, self._rows_done, self._work = k + 1, 0, None
        except BaseException as exc:  # reported by finish(), in the request
            self._error = exc

    def finish(self) -> MergeResult:
        """The merged result: what is left of the sum, at full priority, then the argmax.

        Scale by scale, so that at most one scale's prepared work is held beside the sum (as
        on the background thread): the scales not in the sum yet, then the last one fused
        with the argmax, block by block."""
        with self._lock:
            self._taken = True
            added, rows_done, work, total = self._added, self._rows_done, self._work, self._sum
            logits, self._logits, self._sum, self._work = self._logits, {}, None, None
        if self._error is not None:
            raise self._error
        plan = self.plan
        if not self._early:
            return merge_segmentation(plan, [logits[i] for i in range(len(self._scale_of))],
                                      with_confidence=self.with_confidence,
                                      block_bytes=self._block_bytes)
        n, (H, W), rows = len(plan.scales), plan.original_size, self._rows
        for k in range(added, n):
            wk = work if (k == added and work is not None) else self._prepare(logits, k)
            work = None
            for i in self._passes_of(k):
                logits.pop(i, None)
            if total is None:
                total = np.empty((wk.regions[0].u.shape[0], H, W), np.float32)
            done = rows_done if k == added else 0  # rows of this scale already in the sum
            if k < n - 1:
                def add(r0: int, wk: ScaleWork = wk, k: int = k) -> None:
                    r1 = min(H, r0 + rows)
                    part = source_rows([wk], r0, r1, take_exp=True)
                    if k == 0:
                        total[:, r0:r1] = part
                    else:
                        total[:, r0:r1] += part

                parallel_map(add, range(done, H, rows))  # blocks write disjoint rows
                continue
            acc = RunningArgmax((H, W), self.with_confidence, softmax=False, direct=self._finite)

            def last(r0: int, wk: ScaleWork = wk) -> None:
                r1 = min(H, r0 + rows)
                scores = total[:, r0:r1]
                scores += source_rows([wk], r0, r1, take_exp=True)
                acc.update(scores, 0, r0)

            parallel_map(last, range(0, H, rows))
        return MergeResult(labels=acc.labels, confidence=acc.confidence())

    def close(self) -> None:
        """Stop the background's work on this merge and let go of its memory."""
        with self._lock:
            self._taken = True
            self._logits, self._sum, self._work = {}, None, None
        for job in self._jobs:  # those not started never will
            job.cancel()
