"""Several images per request: one request of 8 images against 8 single requests, per endpoint,
over HTTP to the gateway as its own process (embedded ONNX Runtime).

    .venv/bin/python benchmarks/bench_batch.py [--repo DIR] [--repeat 3] [--threads 2]

Without --repo it exports the demo repository (random-init segmentation, landmarks, detection
and the converted BlazeFace detector) once into $TMPDIR/hrnet_bench_batch_repo. Per endpoint the
8 images are real photos of scikit-image (and matplotlib's Grace Hopper for the faces), of two
sizes, so some passes share shapes across images; the single requests are sent one after the
other by one client, as a client without batch requests would. Rounds interleave the two
variants (round 0 is a warm-up); figures are medians. The ratio below 1 is what the batch saves:
one HTTP exchange and one runner slot instead of eight, and shared backend calls.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, gateway, idle_cpu_note, photo  # noqa: E402

_SIZES = [(640, 480)] * 5 + [(480, 360)] * 3
_SCENES = ["coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry", "coffee",
           "chelsea", "astronaut"]


def _faces() -> list[bytes]:
    """Eight photos with faces (astronaut, cameraman, Grace Hopper), two sizes."""
    import io

    import matplotlib.cbook
    from PIL import Image
    from skimage import data

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = Image.open(f).convert("RGB")
    base = [Image.fromarray(data.astronaut()), Image.fromarray(data.camera()).convert("RGB"),
            hopper]
    out = []
    for i in range(8):
        im = base[i % 3].resize((512, 512) if i < 5 else (384, 384))
        buf = io.BytesIO()
        im.save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def _post(url: str, path: str, images: list[bytes], fields: dict[str, str]) -> float:
    files = [("file", (f"{i}.png", png, "image/png")) for i, png in enumerate(images)]
    t0 = time.perf_counter()
    r = httpx.post(f"{url}{path}", files=files, data=fields, timeout=600)
    elapsed = time.perf_counter() - t0
    r.raise_for_status()
    body = r.json()
    if len(images) > 1 and body["failed"]:
        raise RuntimeError(f"{path}: {body['failed']} images failed: {body['results']}")
    return elapsed


def _case(url: str, path: str, images: list[bytes], fields: dict[str, str], repeat: int
          ) -> tuple[float, float]:
    batch, singles = [], []
    for round_ in range(repeat + 1):
        b = _post(url, path, images, fields)
        s = sum(_post(url, path, [png], fields) for png in images)
        if round_:
            batch.append(b)
            singles.append(s)
    return statistics.median(batch), statistics.median(singles)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ORT intra-op threads of the gateway")
    args = ap.parse_args()
    repo = args.repo or Path(tempfile.gettempdir()) / "hrnet_bench_batch_repo"
    if args.repo is None and not any(repo.glob("*/hrnet.json")):
        subprocess.run([sys.executable, "-m", "model_export", "demo", "--repo", str(repo)],
                       cwd=ROOT, check=True)
    scenes = [photo(n, w, h)[1] for n, (w, h) in zip(_SCENES, _SIZES)]
    faces = _faces()
    cases: list[tuple[str, str, list[bytes], dict[str, str]]] = [
        ("/segment single scale", "/segment", scenes, {"scales": "[1]", "flip": "false"}),
        ("/segment 3 scales + flip", "/segment", scenes[:8], {"scales": "0.75,1,1.25", "flip": "true"}),
        ("/landmarks (faces detected)", "/landmarks", faces, {}),
        ("/faces", "/faces", faces, {}),
        ("/detect", "/detect", scenes, {}),
    ]
    settings: dict[str, Any] = dict(repository=repo, max_images=8, ort_intra_threads=args.threads,
                                    ort_inter_threads=1, access_log="false")
    print(f"repository {repo}, ORT threads {args.threads}, median of {args.repeat} (+1 warm-up); "
          f"{idle_cpu_note()}")
    rows = []
    with gateway(settings) as url:
        for name, path, images, fields in cases:
            b, s = _case(url, path, images, fields, args.repeat)
            rows.append((name, b, s))
            print(f"  {name}: batch {b * 1000:.0f} ms, 8 singles {s * 1000:.0f} ms", flush=True)
    print(f"\n{'case':<30} {'batch of 8':>12} {'8 singles':>12} {'batch/singles':>14}")
    for name, b, s in rows:
        print(f"{name:<30} {b * 1000:>10.0f}ms {s * 1000:>10.0f}ms {b / s:>14.2f}")
    print(f"({idle_cpu_note()} at the end)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    np.seterr(all="ignore")
    main()
