"""The embedded ONNX Runtime backend stops a run whose request left (deadline, client gone)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.runtime.backends.embedded import EmbeddedBackend
from tests.helpers import repo_settings


def test_a_cancelled_inference_is_terminated_and_frees_its_thread(model_repo) -> None:
    settings = repo_settings(model_repo, executor_threads=1)
    big = {"image": np.zeros((1, 3, 1024, 2048), np.float32)}
    small = {"image": np.zeros((1, 3, 64, 128), np.float32)}

    async def main() -> tuple[float, float]:
        backend = EmbeddedBackend(settings)
        await backend.start()
        try:
            await backend.infer("seg_cityscapes", big)  # warm-up
            t0 = time.perf_counter()
            await backend.infer("seg_cityscapes", big)
            full = time.perf_counter() - t0
            run = asyncio.ensure_future(backend.infer("seg_cityscapes", big))
            await asyncio.sleep(full / 10)
            run.cancel()
            t1 = time.perf_counter()
            # One executor thread: this waits for the big run unless it was terminated.
            out = await backend.infer("seg_cityscapes", small)
            assert out["logits"].shape == (1, 19, 16, 32)
            return full, time.perf_counter() - t1
        finally:
            await backend.close()

    full, after_cancel = asyncio.run(main())
    print(f"a full run {full:.2f} s; the next call after a cancel waited {after_cancel:.2f} s")
    assert after_cancel < full / 2, (
        f"the next call waited {after_cancel:.2f} s behind a cancelled {full:.2f} s run")
