"""Landmarks gateway timings: image decode, official face crop, heatmap decode, and the whole task
with the embedded ONNX Runtime backend (1 face vs a batch of faces), each task time next to bare
``session.run`` on the same number of crops (batched like the runner) and their ratio, the
gateway's overhead (crop, batching, decode; no HTTP).

    .venv/bin/python benchmarks/bench_landmarks.py --repo triton_repo [--model face_300w]
    .venv/bin/python benchmarks/bench_landmarks.py --export   # exports a random-init face model first

Numbers are wall-clock medians on this machine; the model's weights do not change its speed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bare_session  # noqa: E402  (also puts the repository root on sys.path)

from service.imaging.decode import decode_image  # noqa: E402
from service.tasks.landmarks.geometry import Face, crop_face, decode_heatmaps  # noqa: E402
from service.settings import Settings  # noqa: E402


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def export_random_face(repo: Path) -> None:
    import torch

    from model_export.exporters import LandmarkExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions

    torch.set_num_threads(1)
    export_model(
        ExportRequest(name="face_300w", task="landmarks", arch="hrnetv2_w18", dataset="300w", repo=repo,
                      random_init=True, seed=0, options=LandmarkExport(max_batch_size=8, parity_batches=(1,)),
                      triton=TritonOptions(instance_kind="cpu", warmup="none")),
        log=lambda _m: None,
    )


def _bare(session, n_crops: int, size: tuple[int, int], max_batch: int):
    """A callable running ``session.run`` over ``n_crops`` crops in batches of ``max_batch``."""
    rng = np.random.default_rng(0)
    batches = [rng.uniform(0, 255, (min(max_batch, n_crops - i), 3, *size)).astype(np.float32)
               for i in range(0, n_crops, max_batch)]
    name = session.get_inputs()[0].name
    return lambda: [session.run(None, {name: b}) for b in batches]


class _ReplayBackend:
    """The embedded backend, or the outputs it gave: after :meth:`replay` every ``infer`` returns
    the next recorded answer, so a task runs everything but the network (runner included)."""

    def __init__(self, backend) -> None:  # noqa: ANN001
        self.backend = backend
        self.recorded: list[dict[str, np.ndarray]] = []
        self.replaying = False
        self._next = 0

    def replay(self) -> None:
        self.replaying, self._next = True, 0

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.backend, name)

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.replaying:
            out = await self.backend.infer(model, inputs)
            self.recorded.append(out)
            return out
        out = self.recorded[self._next % len(self.recorded)]
        self._next += 1
        return {k: v.copy() for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=None)
    ap.add_argument("--model", default="face_300w")
    ap.add_argument("--export", action="store_true", help="export a random-init face model to a temp repo")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = ap.parse_args()

    import skimage.data

    photo = skimage.data.astronaut()
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    big = np.asarray(Image.fromarray(photo).resize((4000, 3000), Image.BILINEAR))

    print(f"decode 512x512 JPEG:              {median_ms(lambda: decode_image(jpeg), args.repeat):8.2f} ms")
    face = Face((210.0, 115.0), 0.9375)
    print(f"crop 188 px face (512 image):     {median_ms(lambda: crop_face(photo, face), args.repeat):8.2f} ms")
    big_face = Face((2000.0, 1500.0), 8.0)  # 1600 px square: the official shrink step
    print(f"crop 1600 px face (4000x3000):    {median_ms(lambda: crop_face(big, big_face), args.repeat):8.2f} ms")
    hm = np.random.default_rng(0).normal(size=(8, 68, 64, 64)).astype(np.float32)
    faces = [face] * 8
    print(f"decode heatmaps, 8 faces x 68:    {median_ms(lambda: decode_heatmaps(hm, faces), args.repeat):8.2f} ms")

    repo = args.repo
    tmp = None
    if args.export:
        tmp = tempfile.TemporaryDirectory()
        repo = Path(tmp.name)
        export_random_face(repo)
    if repo is None:
        print("(no --repo/--export: skipping the end-to-end task timings)")
        return

    from _common import run_task_once

    from service.runtime.backends.embedded import EmbeddedBackend
    from service.runtime.runner import InferenceRunner
    from service.tasks import landmarks
    from service.tasks.landmarks.schemas import FaceSpec, LandmarkOptions

    settings = Settings(repository=repo, ort_intra_threads=args.threads, ort_inter_threads=1, max_batch=8)

    async def bench() -> None:
        backend = EmbeddedBackend(settings)
        await backend.start()
        meta = (await backend.models())[args.model]
        runner = InferenceRunner(backend, settings)
        img = decode_image(jpeg)
        session = bare_session(repo / args.model / "1" / "model.onnx", settings)
        in_h, in_w = meta.landmarks.input_size
        max_batch = max(1, min(meta.max_batch_size, settings.max_batch))
        repeat = max(3, args.repeat // 2)
        for n in (1, 4, 8):
            specs = [FaceSpec(box=[150, 40, 270, 190])] * n
            for flip in (False, True):
                bare_run = _bare(session, n * (2 if flip else 1), (in_h, in_w), max_batch)
                replayed = _ReplayBackend(backend)
                replay_runner = InferenceRunner(replayed, settings)
                task = lambda r: run_task_once(  # noqa: E731
                    landmarks.TASK, img, meta, r, LandmarkOptions(flip=flip), extras={"faces": specs})
                await task(replay_runner)  # records the network's answers
                replayed.replay()
                times, bare_times, work_times = [], [], []
                for i in range(repeat + 1):  # task, bare, replay interleaved: load hits them alike
                    t0 = time.perf_counter()
                    await task(runner)
                    t1 = time.perf_counter()
                    bare_run()
                    t2 = time.perf_counter()
                    await task(replay_runner)
                    if i:  # the first round warms up
                        times.append(t1 - t0)
                        bare_times.append(t2 - t1)
                        work_times.append(time.perf_counter() - t2)
                ms = statistics.median(times) * 1000.0
                bare = statistics.median(bare_times) * 1000.0
                work = statistics.median(work_times) * 1000.0
                print(f"task: {n} face(s), flip={flip!s:5}: {ms:8.1f} ms/request  {ms / n:7.1f} ms/face; "
                      f"bare ORT {bare:8.1f} ms; ratio task/bare {ms / bare:5.2f}; gateway work "
                      f"alone {work:6.1f} ms, (bare + work)/bare {(bare + work) / bare:6.3f}")
        await backend.close()

    asyncio.run(bench())
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
