"""service.tasks.segmentation.merge.merge_segmentation on synthetic logits against a direct torch transcription of the
official merge (full-resolution upsample of every pass, flip average, exp, window count average,
crop, resize to the source, sum over scales, LIP resize, argmax). No network: fast, and it covers
the gateway's block/GEMM/gather code paths and both ``align_corners`` conventions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from service.tasks.segmentation import merge_early as tta_early
from service.tasks.segmentation import merge as tta_merge
from service.tasks.segmentation import scores as tta_scores
from service.tasks.segmentation import plan as tta_plan
from tests.helpers import photo_logits, segmentation_metadata


def _logits(plan: tta_plan.SegPlan, n_cls: int, seed: int, gain: float = 3.0) -> list[np.ndarray]:
    """Random 1/4-resolution logits of every pass, shaped like the network's outputs."""
    rng = np.random.default_rng(seed)
    out = []
    for sp in plan.scales:
        h, w = -(-sp.pass_size[0] // 4), -(-sp.pass_size[1] // 4)
        for _ in range(sp.n_regions * plan.passes_per_region):
            out.append((rng.normal(size=(n_cls, h, w)) * gain).astype(np.float32))
    return out


def _reference(plan: tta_plan.SegPlan, logits: list[np.ndarray]) -> torch.Tensor:
    """Summed scores (C, H, W) in float32, the official way (lib/datasets/base_dataset.py)."""
    ac = plan.align_corners

    def up(x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=ac)

    def run(sp: tta_plan.ScalePlan, i: int) -> torch.Tensor:
        pred = up(torch.from_numpy(logits[i])[None], sp.pass_size)
        if plan.flip:
            f = up(torch.from_numpy(logits[i + 1])[None], sp.pass_size)
            fp = f.clone()
            for a, b in plan.flip_pairs:
                fp[:, a], fp[:, b] = f[:, b], f[:, a]
            pred = (pred + torch.flip(fp, [3])) * 0.5
        return pred.exp()

    n_cls = logits[0].shape[0]
    final = torch.zeros(1, n_cls, *plan.source_size)
    for sp in plan.scales:
        h, w = sp.size
        if sp.windows is None:
            preds = run(sp, sp.first_pass)[:, :, :h, :w]
        else:
            preds = torch.zeros(1, n_cls, *sp.canvas)
            count = torch.zeros(1, 1, *sp.canvas)
            for k, win in enumerate(sp.windows):
                p = run(sp, sp.first_pass + k * plan.passes_per_region)
                vh, vw = win.y1 - win.y0, win.x1 - win.x0
                preds[:, :, win.y0 : win.y1, win.x0 : win.x1] += p[:, :, :vh, :vw]
                count[:, :, win.y0 : win.y1, win.x0 : win.x1] += 1
            preds = (preds / count)[:, :, :h, :w]
        final += up(preds, plan.source_size)
    if plan.source_size != plan.original_size:
        final = up(final, plan.original_size)
    return final[0]


CASES = [
    # id, metadata kwargs, image (h, w), scales, flip
    ("cityscapes_multiscale_flip_windows", dict(base=64, crop=(32, 64), window="cityscapes", ac=False,
                                                n_cls=7), (40, 72), [0.5, 1.0, 1.5], True),
    ("cityscapes_align_corners", dict(base=64, crop=(32, 64), window="cityscapes", ac=True, n_cls=6),
     (50, 37), [0.75, 1.75], False),
    ("base_padded_and_windows", dict(base=64, crop=(48, 48), window="base", ac=False, n_cls=5),
     (45, 70), [0.5, 1.0, 1.75], True),
    ("lip_square_flip_pairs", dict(base=40, crop=(40, 40), window="base", ac=True, n_cls=8, square=40,
                                   pairs=[(2, 3), (4, 5)]), (61, 45), [0.75, 1.25], True),
    ("single_whole_pass", dict(base=72, crop=(64, 128), window="cityscapes", ac=False, n_cls=9),
     (40, 72), [1.0], False),
    # One scale smaller than the source (upsampled along H last): labels from the rows loop.
    ("single_small_scale", dict(base=64, crop=(32, 64), window="cityscapes", ac=False, n_cls=7),
     (40, 72), [0.5], False),
    ("single_small_scale_flip_align_corners", dict(base=64, crop=(48, 48), window="base", ac=True,
                                                   n_cls=6), (45, 70), [0.75], True),
    # Scale maps shrunk 3-5x onto the source: evaluated only where the shrink reads them.
    ("strong_shrink_windows_flip", dict(base=64, crop=(32, 64), window="cityscapes", ac=False,
                                        n_cls=7), (14, 21), [0.5, 1.75], True),
    ("strong_shrink_align_corners", dict(base=64, crop=(48, 48), window="base", ac=True, n_cls=5),
     (15, 20), [1.0, 1.75], False),
]
SHRINK = [c for c in CASES if c[0].startswith("strong_shrink")]


def _plan(case) -> tuple[tta_plan.SegPlan, int]:
    _, kw, size, scales, flip = case
    plan = tta_plan.plan_segmentation(size, segmentation_metadata(**kw), scales=scales, flip=flip)
    return plan, kw["n_cls"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_merge_matches_official_order(case):
    plan, n_cls = _plan(case)
    logits = _logits(plan, n_cls, seed=len(case[0]))
    got = tta_merge.merge_segmentation(plan, logits, with_confidence=True)
    ref = _reference(plan, logits)
    ref_labels = ref.argmax(0).numpy()
    assert got.labels.shape == ref_labels.shape == plan.original_size
    assert len(np.unique(ref_labels)) >= 3
    agree = float((got.labels == ref_labels).mean())
    assert agree >= 0.9995, f"{case[0]}: {agree:.5f}"
    if case[0] == "single_whole_pass":  # logits path: confidence is the softmax maximum
        ref_conf = torch.softmax(ref.log(), 0).max(0).values.numpy()
    else:
        ref_conf = (ref.max(0).values / ref.sum(0)).numpy()
    np.testing.assert_allclose(got.confidence, ref_conf, atol=2e-4)


@pytest.mark.parametrize("case", CASES[:4] + SHRINK, ids=[c[0] for c in CASES[:4] + SHRINK])
def test_blocks_chunks_and_gather_path_agree(case, monkeypatch):
    plan, n_cls = _plan(case)
    logits = _logits(plan, n_cls, seed=7)
    base = tta_merge.merge_segmentation(plan, logits, with_confidence=True)
    # One row per block and one channel per chunk: same arithmetic, so identical labels.
    tiny = tta_merge.merge_segmentation(plan, logits, with_confidence=True, block_bytes=1, memory_budget=1)
    assert np.array_equal(base.labels, tiny.labels)
    np.testing.assert_allclose(base.confidence, tiny.confidence, atol=1e-6)
    # Exact gathers instead of GEMMs (the path for non-finite scores): equal up to rounding.
    monkeypatch.setattr(tta_scores, "EXP_SAFE", float("-inf"))
    gathered = tta_merge.merge_segmentation(plan, logits, with_confidence=True)
    assert float((gathered.labels == base.labels).mean()) >= 0.9995
    np.testing.assert_allclose(gathered.confidence, base.confidence, atol=1e-5)


def test_overflowing_scores_stay_local():
    """Logits near float32's exp limit: the gather path keeps inf/nan where the official one has it."""
    plan, n_cls = _plan(CASES[0])
    logits = _logits(plan, n_cls, seed=3)
    logits[0][2, 3, 4] = 400.0  # flip-averaged 200: exp overflows to inf around this spot
    got = tta_merge.merge_segmentation(plan, logits)
    ref = _reference(plan, logits)
    ok = torch.isfinite(ref).all(0).numpy()
    assert 0.5 < ok.mean() < 1.0  # some pixels overflow, most do not
    agree = float((got.labels[ok] == ref.argmax(0).numpy()[ok]).mean())
    assert agree >= 0.9995


@pytest.mark.parametrize("case", SHRINK, ids=[c[0] for c in SHRINK])
def test_shrunk_scales_evaluated_where_read(case, monkeypatch):
    """A strongly shrunk scale is evaluated on the rows and columns its shrink reads only, and
    gives the merge that evaluates every pixel of it (up to rounding)."""
    plan, n_cls = _plan(case)
    logits = _logits(plan, n_cls, seed=11)
    sp = plan.scales[-1]
    regs = [tta_scores.region_logits(plan, logits, sp.first_pass + r * plan.passes_per_region)
            for r in range(sp.n_regions)]
    work = tta_scores.prepare_scale(plan, sp, regs, finite=True)
    assert work.rows_at is not None and work.cols_at is not None
    assert work.grid[0] < 0.75 * sp.size[0] and work.grid[1] < 0.75 * sp.size[1]
    compact = tta_merge.merge_segmentation(plan, logits, with_confidence=True)
    monkeypatch.setattr(tta_scores, "COMPACT_FRACTION", 0.0)
    assert tta_scores.prepare_scale(plan, sp, regs, finite=True).rows_at is None
    every = tta_merge.merge_segmentation(plan, logits, with_confidence=True)
    assert float((compact.labels == every.labels).mean()) >= 0.9995
    np.testing.assert_allclose(compact.confidence, every.confidence, atol=1e-5)


def test_window_counts_by_axis_equal_the_2d_count():
    """The window count as a product of per-axis counts equals counting every window in 2D, and
    windows that are not a grid fall back to the 2D count."""
    grid = [tta_plan.Window(y0, y0 + 6, x0, x0 + 8) for y0 in (0, 4) for x0 in (0, 5, 10)]
    loose = [tta_plan.Window(0, 6, 0, 8), tta_plan.Window(3, 9, 4, 12), tta_plan.Window(0, 3, 8, 12),
             tta_plan.Window(6, 9, 0, 4)]
    for wins, size in ((grid, (10, 18)), (loose, (9, 12))):
        sp = tta_plan.ScalePlan(1.0, size, size, (6, 8), wins)
        count = np.zeros(size, np.float32)
        for w in wins:
            count[w.y0 : w.y1, w.x0 : w.x1] += 1
        want = 1.0 / count
        inv = tta_scores._InvCount(sp, None, None)
        assert (inv.full is None) == (wins is grid)
        np.testing.assert_array_equal(inv.rows(0, size[0]), want)
        rows, cols = np.array([1, 4, 5, 8]), np.array([0, 7, 8, 11])
        np.testing.assert_array_equal(tta_scores._InvCount(sp, rows, cols).rows(1, 3),
                                      want[np.ix_(rows, cols)][1:3])


EARLY = [c for c in CASES if len(c[3]) > 1 and "lip" not in c[0]]


def _early_run(plan, logits, *, wait_before: int | None) -> tta_merge.MergeResult:
    """An early merge fed every pass; the background is waited for after the passes of the
    first ``wait_before`` scales (None: never, finish takes over whatever is running)."""
    early = tta_early.EarlyMerge(plan, with_confidence=True, block_bytes=256)
    assert early.sums_early
    for i, lg in enumerate(logits):
        early.add(i, {"logits": lg})
        if wait_before is not None and early._submitted == wait_before:
            for job in early._jobs:
                job.result()
    try:
        return early.finish()
    finally:
        early.close()


@pytest.mark.parametrize("case", EARLY, ids=[c[0] for c in EARLY])
@pytest.mark.parametrize("wait_before", [None, 1, 99])
def test_early_merge_equals_the_merge_after_the_passes(case, wait_before):
    """Scales summed on the background thread as their passes come, the rest by finish():
    the same labels and confidence as the merge after the last pass with the same blocks (one
    channel chunk: the class sums in the same order)."""
    plan, n_cls = _plan(case)
    logits = _logits(plan, n_cls, seed=5)
    want = tta_merge.merge_segmentation(plan, logits, with_confidence=True, memory_budget=1 << 30,
                                        block_bytes=256)
    got = _early_run(plan, logits, wait_before=wait_before)
    assert np.array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.confidence, want.confidence)


def test_early_merge_taken_over_inside_a_scale(monkeypatch):
    """finish() while the background is inside a scale: it does not wait for that scale, adds
    the rows the background has not, and gives the same answer."""
    import threading

    plan, n_cls = _plan(CASES[0])
    logits = _logits(plan, n_cls, seed=9)
    want = tta_merge.merge_segmentation(plan, logits, with_confidence=True, memory_budget=1 << 30,
                                        block_bytes=256)
    reached, release, calls = threading.Event(), threading.Event(), [0]
    real = tta_early.source_rows

    def slow(works, a, b, take_exp):
        if threading.current_thread().name.startswith("cpu-bg"):
            calls[0] += 1
            if calls[0] == 3:  # the third block of the first scale
                reached.set()
                release.wait(10)
        return real(works, a, b, take_exp)

    monkeypatch.setattr(tta_early, "source_rows", slow)
    early = tta_early.EarlyMerge(plan, with_confidence=True, block_bytes=256)
    for i, lg in enumerate(logits):
        early.add(i, {"logits": lg})
    assert reached.wait(10)
    got = early.finish()  # the background is held in its third block
    assert early._added == 0 and early._rows_done > 0  # two blocks of scale 0 were in the sum
    release.set()
    early._jobs[0].result()
    assert np.array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.confidence, want.confidence)
    early.close()


def test_early_merge_not_started_when_it_does_not_pay():
    """One scale, LIP's final resize, or a sum over its memory bound: the outputs are collected
    and merged by finish() as after the passes."""
    lip, n_lip = _plan(CASES[3])
    single, n_single = _plan(CASES[4])
    assert not tta_early.EarlyMerge(lip).sums_early
    assert not tta_early.EarlyMerge(single).sums_early
    plan, n_cls = _plan(CASES[0])
    logits = _logits(plan, n_cls, seed=2)
    early = tta_early.EarlyMerge(plan, max_bytes=1)
    for i, lg in enumerate(logits):
        early.add(i, {"logits": lg})
    assert not early.sums_early and not early._jobs
    want = tta_merge.merge_segmentation(plan, logits)
    assert np.array_equal(early.finish().labels, want.labels)


def test_early_merge_closed_mid_request_stops_its_background_work():
    """A request that ends early (timeout, error) closes its merge: background work not begun
    never starts, and the sum and the logits are let go."""
    import threading

    from service.runtime import cpu

    plan, n_cls = _plan(CASES[2])
    logits = _logits(plan, n_cls, seed=4)
    gate = threading.Event()
    blocker = cpu.background(lambda: gate.wait(10))  # holds the one background thread
    early = tta_early.EarlyMerge(plan, block_bytes=256)
    for i, lg in enumerate(logits):
        early.add(i, {"logits": lg})
    assert len(early._jobs) == 2  # the first two of three scales, queued behind the blocker
    early.close()
    gate.set()
    blocker.result(timeout=10)
    assert all(job.cancelled() for job in early._jobs)
    assert early._sum is None and not early._logits


@pytest.mark.parametrize("providers, threads, mode, expected", [
    (["CPUExecutionProvider"], 0, "auto", False),  # ORT on every core: no room beside it
    (["CPUExecutionProvider"], 1, "auto", True),  # ORT held to fewer threads than the CPUs
    (["CUDAExecutionProvider", "CPUExecutionProvider"], 0, "auto", True),
    (["triton:onnxruntime", "KIND_CPU"], 0, "auto", True),  # the network runs in Triton
    (["CPUExecutionProvider"], 0, "on", True),
    (["CUDAExecutionProvider"], 0, "off", False),
])
def test_early_merge_where_cores_stay_free(providers, threads, mode, expected, monkeypatch):
    """``early_merge=auto`` begins the merge during the passes only where inference leaves the
    gateway's cores free; ``on``/``off`` force it."""
    import os
    from types import SimpleNamespace

    from service.settings import Settings
    from service.tasks import segmentation

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    plan, _ = _plan(CASES[0])
    meta = segmentation_metadata(**CASES[0][1])
    runner = SimpleNamespace(
        settings=Settings(ort_intra_threads=threads, early_merge=mode, merge_on_device="off"),
        backend=SimpleNamespace(providers=lambda: {meta.name: providers}))
    assert (segmentation.early_merge(plan, meta, runner) is not None) is expected


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_running_argmax_equals_argmax_with_ties(chunk):
    """The running argmax over channel chunks and row blocks is ``argmax``: ties (many, from a
    coarse grid of values) keep the lowest class, across chunks too; -inf everywhere gives 0."""
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 3, (5, 6, 7)).astype(np.float32)
    scores[:, 0, 0] = -np.inf
    acc = tta_scores.RunningArgmax((6, 7), with_confidence=False, softmax=False)
    for r0 in (0, 4):
        r1 = min(6, r0 + 4)
        for c0 in range(0, 5, chunk):
            acc.update(scores[c0 : c0 + chunk, r0:r1].copy(), c0, r0)
    np.testing.assert_array_equal(acc.labels, scores.argmax(axis=0))
    np.testing.assert_array_equal(acc.best, scores.max(axis=0))


@pytest.mark.parametrize("name", ["coffee", "astronaut", "chelsea", "rocket"])
def test_argmax_finite_equals_argmax_on_photos(name):
    """The one-read argmax gives ``argmax(axis=0)`` and the sweep's labels exactly, on photo
    logits and on the same rounded to a coarse grid (ties everywhere: the lower class), for whole
    arrays and for row slices of a (C, H, W) map (the early merge's view of its sum)."""
    logits = photo_logits(name, 61, 83, 19, seed=3)
    for scores in (logits, np.round(logits * 2) / 2):
        want = scores.argmax(axis=0)
        best, swept = np.full(scores.shape[1:], -np.inf, np.float32), np.zeros(scores.shape[1:], np.int32)
        tta_scores.argmax_sweep(scores, best, swept, 0)
        got = tta_scores.argmax_finite(scores)
        assert got.dtype == np.int32 and got.shape == scores.shape[1:]
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got, swept)
        view = scores[:, 17:40]
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(tta_scores.argmax_finite(view), want[17:40])
    assert not tta_scores.argmax_finite(logits[:1]).any()  # one class: all 0


def test_running_argmax_direct():
    """``direct``: each row block's labels by one argmax, no running maximum; a later channel
    chunk is refused, and confidence keeps the running sweep."""
    scores = np.round(photo_logits("coffee", 10, 12, 6) * 4) / 4
    acc = tta_scores.RunningArgmax((10, 12), with_confidence=False, softmax=False, direct=True)
    assert acc.direct and acc.best is None
    for r0 in (0, 4, 8):
        acc.update(scores[:, r0 : r0 + 4].copy(), 0, r0)
    np.testing.assert_array_equal(acc.labels, scores.argmax(axis=0))
    with pytest.raises(ValueError):
        acc.update(scores[3:, :4].copy(), 3, 0)
    conf = tta_scores.RunningArgmax((10, 12), with_confidence=True, softmax=False, direct=True)
    assert not conf.direct and conf.best is not None


def _photo_pass_logits(plan: tta_plan.SegPlan, n_cls: int) -> list[np.ndarray]:
    """Every pass's 1/4-resolution logits from a photo (regions and edges, as a trained model's),
    a different colour draw per pass."""
    out = []
    for sp in plan.scales:
        h, w = -(-sp.pass_size[0] // 4), -(-sp.pass_size[1] // 4)
        for _ in range(sp.n_regions * plan.passes_per_region):
            lg = photo_logits("chelsea", h, w, n_cls, seed=len(out))
            out.append(lg * np.float32(12.0 / max(1e-6, float(-lg.min()))))  # within [-12, 0]
    return out


class _SweepOnly(tta_scores.RunningArgmax):
    """The running argmax as before ``direct``: the sweep for every update."""

    def __init__(self, size, with_confidence, softmax, *, direct=False):
        super().__init__(size, with_confidence, softmax)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_merge_labels_by_direct_argmax_equal_the_sweep(case, monkeypatch):
    """A labels-only merge of finite logits takes each block's argmax directly (the merge after
    the passes and the early merge alike), with the very labels of the sweep it replaces."""
    plan, n_cls = _plan(case)
    logits = _photo_pass_logits(plan, n_cls)
    calls = [0]
    real = tta_scores.argmax_finite

    def counted(scores):
        calls[0] += 1
        return real(scores)

    monkeypatch.setattr(tta_scores, "argmax_finite", counted)
    got = tta_merge.merge_segmentation(plan, logits, with_confidence=False, block_bytes=256)
    direct_calls = calls[0]
    early = tta_early.EarlyMerge(plan, with_confidence=False, block_bytes=256)
    for i, lg in enumerate(logits):
        early.add(i, {"logits": lg})
    try:
        got_early = early.finish()
    finally:
        early.close()
    monkeypatch.setattr(tta_merge, "RunningArgmax", _SweepOnly)
    monkeypatch.setattr(tta_early, "RunningArgmax", _SweepOnly)
    calls[0] = 0
    want = tta_merge.merge_segmentation(plan, logits, with_confidence=False, block_bytes=256)
    assert calls[0] == 0
    fast = len(plan.scales) == 1  # the single whole pass takes its labels from the upsampling loop
    assert direct_calls > 0 or fast
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got_early.labels, want.labels)
    ref = _reference(plan, logits).argmax(0).numpy()
    assert float((got.labels == ref).mean()) >= 0.9995


@pytest.mark.parametrize("case", [c for c in CASES if c[0].startswith("single_small")],
                         ids=lambda c: c[0])
def test_single_small_scale_labels_from_the_rows_loop(case, monkeypatch):
    """A labels-only merge of one scale upsampled onto the source takes each block's labels
    from the fused rows + argmax loop (no full-resolution scores, no argmax_finite), with the
    labels of argmax over the scores that source_rows computes, block by block."""
    plan, n_cls = _plan(case)
    logits = _photo_pass_logits(plan, n_cls)
    fused = [0]
    real = tta_scores.resample_kernels.rows_argmax

    def counted(*args, **kwargs):
        fused[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(tta_scores.resample_kernels, "rows_argmax", counted)
    monkeypatch.setattr(tta_scores, "argmax_finite", lambda s: pytest.fail("scores materialised"))
    got = tta_merge.merge_segmentation(plan, logits, with_confidence=False, block_bytes=256)
    assert fused[0] > 1  # several blocks
    monkeypatch.undo()
    regs = [tta_scores.region_logits(plan, logits, plan.region_first(plan.scales[0], r))
            for r in range(plan.scales[0].n_regions)]
    work = tta_scores.prepare_scale(plan, plan.scales[0], regs, True)
    scores = tta_scores.source_rows([work], 0, plan.original_size[0], take_exp=True)
    np.testing.assert_array_equal(got.labels, np.argmax(scores, axis=0))
    assert len(np.unique(got.labels)) >= 3


def test_non_finite_logits_keep_the_sweep(monkeypatch):
    """NaN logits are not GEMM-safe: the merge keeps the sweep (which never picks a NaN score),
    never the direct argmax (which would stop at a NaN in the first class)."""
    plan, n_cls = _plan(CASES[4])  # one whole pass
    logits = _logits(plan, n_cls, seed=2)
    logits[0][0, 3:6, 4:9] = np.nan
    monkeypatch.setattr(tta_scores, "argmax_finite", lambda s: pytest.fail("direct argmax on NaN"))
    got = tta_merge.merge_segmentation(plan, logits)
    monkeypatch.setattr(tta_merge, "RunningArgmax", _SweepOnly)
    want = tta_merge.merge_segmentation(plan, logits)
    np.testing.assert_array_equal(got.labels, want.labels)
    assert (got.labels != 0).any()


@pytest.mark.parametrize("name", ["coffee", "astronaut", "rocket"])
def test_flip_average_equals_the_numpy_formula_on_photos(name):
    """The flip average (mirror by OpenCV, channel by channel) has the very bits of the numpy
    formula it replaced, ``(a + b[perm, :, ::-1]) * 0.5``, with and without flip pairs, for
    float32 and float16 logits (a backend's half-precision outputs)."""
    case = ("lip_square_flip_pairs", dict(base=40, crop=(40, 40), window="base", ac=True, n_cls=8,
                                          square=40, pairs=[(2, 3), (4, 5)]), (61, 45), [1.0], True)
    for pairs in ([(2, 3), (4, 5)], []):
        case[1]["pairs"] = pairs
        plan, n_cls = _plan(case)
        a = photo_logits(name, 23, 31, n_cls, seed=1)
        b = photo_logits(name, 23, 31, n_cls, seed=2)[:, ::-1]  # a mirrored photo's pass
        for dtype in (np.float32, np.float16):
            la, lb = a.astype(dtype), np.ascontiguousarray(b.astype(dtype))
            perm = np.arange(n_cls)
            for i, j in pairs:
                perm[i], perm[j] = j, i
            want = (la.astype(np.float32) + lb.astype(np.float32)[perm][:, :, ::-1]) * np.float32(0.5)
            got = tta_scores.region_logits(plan, [la, lb], 0)
            assert got.dtype == np.float32 and got.flags.c_contiguous
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
