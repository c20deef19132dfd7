"""InferenceRunner: batching by shape and size limits, queue bound (429), deadline (504)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.errors import Overloaded, Timeout
from service.contract import ModelMetadata
from service.runtime.runner import InferenceRunner
from service.settings import Settings


class FakeBackend:
    name = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[tuple] = []
        self.delay = delay

    async def infer(self, model, inputs):
        x = inputs["image"]
        self.calls.append(x.shape)
        await asyncio.sleep(self.delay)
        return {"logits": x[:, :1] * 2.0}


def _meta(max_batch: int) -> ModelMetadata:
    return ModelMetadata.model_validate({
        "name": "m", "task": "segmentation", "arch": "a", "dataset": "d", "labels": ["x"],
        "align_corners": False, "max_batch_size": max_batch,
        "inputs": [{"name": "image", "dtype": "FP32", "dims": [3, -1, -1]}],
        "outputs": [{"name": "logits", "dtype": "FP32", "dims": [1, -1, -1]}],
        "weights": {"random_init": True, "origin": "random-init", "format": "random-init"},
        "export": {"model_export_version": "0", "torch": "0", "onnx": "0", "opset": 18,
                   "exported_at": "now"},
    })


def test_batches_grouped_by_shape_and_limited():
    be = FakeBackend()
    runner = InferenceRunner(be, Settings(max_batch=3))
    passes = [np.full((3, 4, 4), i, np.float32) for i in range(5)] + [np.full((3, 2, 6), 9, np.float32)] * 2
    out = asyncio.run(runner.run(_meta(4), passes))
    assert sorted(be.calls) == sorted([(3, 3, 4, 4), (2, 3, 4, 4), (2, 3, 2, 6)])
    for i in range(5):  # results come back in pass order
        assert out[i]["logits"].shape == (1, 4, 4) and out[i]["logits"][0, 0, 0] == 2 * i
    assert out[5]["logits"][0, 0, 0] == 18


def test_model_max_batch_one():
    be = FakeBackend()
    asyncio.run(InferenceRunner(be, Settings(max_batch=8)).run(_meta(1), [np.zeros((3, 2, 2), np.float32)] * 3))
    assert be.calls == [(1, 3, 2, 2)] * 3


def test_queue_full_raises_overloaded_and_queue_drains():
    async def main():
        runner = InferenceRunner(FakeBackend(delay=0.2), Settings(max_concurrency=1, max_queue=1))
        p = [np.zeros((3, 2, 2), np.float32)]
        t1 = asyncio.create_task(runner.run(_meta(1), p))
        await asyncio.sleep(0.05)
        t2 = asyncio.create_task(runner.run(_meta(1), p))  # waits in the queue
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded) as err:
            await runner.run(_meta(1), p)
        assert err.value.status_code == 429 and "Retry-After" in err.value.headers
        await asyncio.gather(t1, t2)
        assert runner.waiting == 0 and runner.running == 0

    asyncio.run(main())


def test_deadline_raises_timeout_and_frees_slot():
    async def main():
        runner = InferenceRunner(FakeBackend(delay=0.5), Settings(request_timeout_s=0.1, max_concurrency=1))
        with pytest.raises(Timeout):
            await runner.run(_meta(1), [np.zeros((3, 2, 2), np.float32)])
        assert runner.waiting == 0 and runner.running == 0

    asyncio.run(main())


def test_batches_are_bounded_by_network_pixels():
    """Large passes run alone, small ones share a batch up to max_batch."""
    be = FakeBackend()
    runner = InferenceRunner(be, Settings(max_batch=8, max_batch_pixels=64 * 64))
    big = [np.zeros((3, 64, 64), np.float32)] * 3  # one per batch
    small = [np.zeros((3, 16, 16), np.float32)] * 20  # 16 fit the pixel budget, 8 the batch
    asyncio.run(runner.run(_meta(8), big + small))
    assert sorted(c[0] for c in be.calls) == [1, 1, 1, 4, 8, 8]


def test_deadline_drops_the_batches_not_yet_started():
    """Past the deadline the request leaves at once: the batch in flight is abandoned and none of
    the remaining batches is sent to the backend."""
    be = FakeBackend(delay=0.3)
    runner = InferenceRunner(be, Settings(max_batch=1, request_timeout_s=10))
    passes = [np.zeros((3, 4, 4), np.float32)] * 10

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(Timeout):
            await runner.run(_meta(1), passes, deadline=t0 + 0.45)
        took = loop.time() - t0
        await asyncio.sleep(0.7)  # time for more batches, were any still scheduled
        return took

    took = asyncio.run(main())
    assert took < 0.6, f"504 after {took:.2f} s for a 0.45 s deadline"
    assert len(be.calls) == 2  # the first finished, the second was in flight; 8 never started
    assert runner.running == 0 and runner.waiting == 0


def test_outputs_delivered_as_each_batch_returns():
    """With ``on_output`` each pass's outputs go to it as soon as its batch is back (the early
    merge's feed), in batch order, and nothing is kept."""
    be = FakeBackend()
    seen: list[tuple[int, int]] = []

    def on_output(i, out):
        seen.append((i, len(be.calls)))  # which batch had run when pass i arrived
        assert out["logits"][0, 0, 0] == 2 * i

    passes = [np.full((3, 4, 4), i, np.float32) for i in range(5)]
    out = asyncio.run(InferenceRunner(be, Settings(max_batch=2)).run(_meta(4), passes,
                                                                     on_output=on_output))
    assert out == []
    assert seen == [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3)]


class _ThreadRecordingPasses:
    """Lazy passes of one shape that note whether each was made on the event loop's thread."""

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        self.n, self.shape, self.on_loop = n, shape, []

    def __len__(self) -> int:
        return self.n

    def signature(self, i: int):
        return (("image", self.shape, "<f4"),)

    def __getitem__(self, i: int):
        try:
            asyncio.get_running_loop()
            self.on_loop.append(True)
        except RuntimeError:
            self.on_loop.append(False)
        return {"image": np.full(self.shape, i, np.float32)}


@pytest.mark.parametrize("shape,on_loop", [((3, 512, 512), False), ((3, 8, 8), True)])
def test_large_batches_are_made_off_the_event_loop(shape, on_loop):
    """Making and stacking a large batch (a scale's resize, a copy of megabytes) runs in a worker
    thread, so the event loop serves other requests meanwhile; a small one is stacked in place."""
    from service.runtime.runner import OFFLOAD_BATCH_BYTES

    assert (4 * np.prod(shape) >= OFFLOAD_BATCH_BYTES) != on_loop
    be = FakeBackend()
    passes = _ThreadRecordingPasses(3, shape)
    out = asyncio.run(InferenceRunner(be, Settings(max_batch=2)).run(_meta(4), passes))
    assert passes.on_loop == [on_loop] * 3
    assert be.calls == [(2, *shape), (1, *shape)]
    assert [float(o["logits"][0, 0, 0]) for o in out] == [0.0, 2.0, 4.0]


def test_next_batch_is_made_while_the_backend_runs():
    """While the backend runs a batch, the next one is already made (resized, stacked), so
    making passes does not add to the inference time; a failing request drops it unawaited."""
    events: list[str] = []

    class Backend(FakeBackend):
        async def infer(self, model, inputs):
            events.append(f"run {int(inputs['image'][0, 0, 0, 0])}")
            await asyncio.sleep(0.2)
            events.append("done")
            return {"logits": inputs["image"][:, :1]}

    class Passes(_ThreadRecordingPasses):
        def __getitem__(self, i: int):
            events.append(f"make {i}")
            return super().__getitem__(i)

    asyncio.run(InferenceRunner(Backend(), Settings(max_batch=1)).run(_meta(1), Passes(3, (3, 512, 512))))
    done = [k for k, e in enumerate(events) if e == "done"]
    assert len(done) == 3 and [e for e in events if e.startswith("run")] == ["run 0", "run 1", "run 2"]
    for b in (1, 2):  # made before the batch ahead of it has finished, run after it
        assert events.index(f"make {b}") < done[b - 1] < events.index(f"run {b}")

    class Failing(FakeBackend):
        async def infer(self, model, inputs):
            raise RuntimeError("backend down")

    with pytest.raises(RuntimeError, match="backend down"):
        asyncio.run(InferenceRunner(Failing(), Settings(max_batch=1)).run(_meta(1), _ThreadRecordingPasses(3, (3, 512, 512))))
