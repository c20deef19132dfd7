"""Memory is handed back: after a heavy request the gateway process's resident memory returns to
within 10% of its level after warm-up (a retained high-water mark was the problem)."""

from __future__ import annotations

import io
import time

import httpx
import numpy as np
from PIL import Image

from tests.helpers import gateway_process, photo, photo_png


def _jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo("coffee")).resize(size, Image.BILINEAR).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_rss_returns_after_a_heavy_request(model_repo) -> None:
    # Memory goes back once the gateway has been idle for 1 s after the large request.
    settings = {"repository": model_repo, "ort_intra_threads": 1, "ort_inter_threads": 1,
                "release_memory_idle_s": 1}
    with gateway_process(settings) as gw, httpx.Client(timeout=300) as client:
        url = gw.url

        def segment(data: bytes, **options: str) -> None:
            r = client.post(f"{url}/segment", files={"file": ("a.jpg", data, "image/jpeg")},
                            data={"model": "seg_cityscapes", **options})
            assert r.status_code == 200, r.text

        heavy = _jpeg((3000, 2000))
        options = {"scales": "[1,2]", "flip": "true", "confidence": "true", "overlay": "true",
                   "rle": "true"}
        segment(photo_png((320, 240)))
        for _ in range(2):  # warm-up: sessions, caches, thread pools, first big buffers
            segment(heavy, **options)
        time.sleep(3.0)
        rest, _ = gw.memory_mb()
        segment(heavy, **options)
        # The release runs 1 s after the answer, off its path: give a busy machine time.
        deadline = time.monotonic() + 15
        while True:
            after, peak = gw.memory_mb()
            if after <= 1.10 * rest or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    print(f"RSS after warm-up {rest:.0f} MiB, after a heavy request {after:.0f} MiB, "
          f"peak {peak:.0f} MiB")
    assert peak > rest + 150, "the request was not heavy enough to tell anything"
    assert after <= 1.10 * rest, f"RSS {after:.0f} MiB after the requests vs {rest:.0f} MiB at rest"
