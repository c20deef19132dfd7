"""The merge's resampling primitives on the merge's shapes (columns: banded GEMM vs exact 2-tap
gathers; rows: the compiled 2-tap loop vs the banded GEMM and the gathers it replaced), and the
whole-image resize of the passes (OpenCV vs the NumPy gathers it replaced).

    .venv/bin/python benchmarks/bench_resize.py [--repeat 15] [--channels 19] [--rows 8]

Each line times one block of the merge (``--rows`` output rows of ``--channels`` channels, as
``service.tasks.segmentation.merge`` processes them) each way and prints the ratios; below 1 the
first is faster. Along W the merge uses OpenCV or GEMMs for finite scores, gathers for
downsampling columns and whenever scores may be non-finite; along H the compiled loop for all.
CPU time of this process (BLAS stays single-threaded at these sizes), median of --repeat. Takes a
few seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.imaging.resize import (  # noqa: E402
    AxisCoeffs, _along, _band_matrix, axis_coeffs, gather_last, matmul_last, resample_rows,
    resize_bilinear, resize_image,
)


def cpu_us(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--channels", type=int, default=19)
    ap.add_argument("--rows", type=int, default=8)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    c, r, n = args.channels, args.rows, args.repeat

    print(f"columns: ({c}, {r}, in) -> ({c}, {r}, out)          gemm us  gather us  gemm/gather")
    for w_in, w_out in [(256, 1024), (512, 2048), (1024, 2048), (1792, 2048), (768, 1024),
                        (1280, 1024), (1792, 1024)]:
        x = rng.normal(size=(c, r, w_in)).astype(np.float32)
        cw = axis_coeffs(w_in, w_out)
        g = cpu_us(lambda: matmul_last(x, w_out, False), n)
        t = cpu_us(lambda: gather_last(x, cw), n)
        print(f"  {w_in:5d} -> {w_out:5d}                               {g:8.0f}  {t:9.0f}  {g / t:11.2f}")

    print(f"rows: {r} output rows of ({c}, in, W)           loop us  gemm us  gather us  loop/gemm  "
          "loop/gather")
    for h_in, h_out, w in [(128, 512, 1024), (224, 896, 1792), (256, 1024, 2048), (512, 1024, 2048),
                           (896, 512, 1792), (640, 512, 1280)]:
        x = rng.normal(size=(c, h_in, w)).astype(np.float32)
        ch = axis_coeffs(h_in, h_out)
        s0 = h_out // 2
        lo, hi, m = _band_matrix(ch, s0, s0 + r)  # the banded GEMM the merge used before the loop
        sub = AxisCoeffs(*(v[s0 : s0 + r] for v in ch))
        k = cpu_us(lambda: resample_rows(x, ch, s0, s0 + r), n)
        g = cpu_us(lambda: np.matmul(m, x[:, lo:hi]), n)
        t = cpu_us(lambda: _along(x, sub, 1), n)
        print(f"  {h_in:5d} -> {h_out:5d}, W {w:5d}              {k:8.0f} {g:8.0f}  {t:9.0f}  "
              f"{k / g:9.2f}  {k / t:11.2f}")

    print("whole image (h, w, 3) -> (H, W, 3), the passes' resize  opencv us  gather us  cv/gather")
    for src, dst in [((1024, 2048), (1792, 3584)), ((1024, 2048), (512, 1024)),
                     ((400, 600), (480, 720)), ((1365, 2048), (800, 1200))]:
        u8 = rng.integers(0, 256, size=(*src, 3), dtype=np.uint8)
        f32 = u8.astype(np.float32)
        reps = max(3, n // 3)
        for name, x in (("uint8", u8), ("float32", f32)):
            g = cpu_us(lambda: resize_image(x, dst), reps)
            t = cpu_us(lambda: resize_bilinear(x, dst, layout="hwc"), reps)
            print(f"  {name:7s} {src} -> {dst}   {g:8.0f}  {t:9.0f}  {g / t:11.3f}")


if __name__ == "__main__":
    main()
