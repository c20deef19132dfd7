"""Admission control and batching between the tasks and the backend.

* at most ``max_concurrency`` requests run inference at once (a semaphore);
* at most ``max_queue`` requests wait for a slot; beyond that a request gets 429 + Retry-After;
* each request's inference (waiting included) has a deadline (504 past it);
* a request's network passes (of all its images: :func:`chain_passes`) are grouped by the shapes
  (and dtypes) of all their inputs and sent in batches of at most
  ``min(model.max_batch_size, settings.max_batch)`` passes and at most
  ``settings.max_batch_pixels`` network pixels (large passes run alone: stacking eight
  1024x2048 windows made inference 1.17x slower and took 3.8x the memory of one at a time).

A pass maps input names to arrays (segmentation's ``image``; detection's ``image`` +
``image_size``), or is a single array fed to the model's first input; arrays never carry the
batch dimension. Outputs come back per pass, all at the end or, to a caller's ``on_output``,
as each batch returns (segmentation's early merge). The runner reports batches and its queue
to an optional :class:`RunnerObserver` (the HTTP layer's Prometheus metrics implement it).

Backends must not block the event loop (the embedded backend runs ONNX Runtime in a thread pool);
the runner itself makes and stacks large batches in a worker thread (``OFFLOAD_BATCH_BYTES``),
each while the backend runs the batch before it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Awaitable, Callable, Protocol, Sequence, TypeVar, Union, runtime_checkable

import numpy as np

from service.contract import ModelMetadata
from service.errors import Overloaded, Timeout
from service.runtime.backends.base import Backend
from service.settings import Settings
from service.timings import Timings

#: One network pass: input name -> array (or one array for the first input), no batch dimension.
Pass = Union[Mapping[str, np.ndarray], np.ndarray]

#: Batches of at least this many input bytes are made and stacked in a worker thread: making a
#: pass can mean resizing its scale (3584x1792 float32 from 2048x1024: 38 ms) and stacking copies
#: it, and on the event loop that would stall every other request's I/O meanwhile. Smaller
#: batches (a face crop, a small scale) are stacked in place: the thread hop would cost more.
OFFLOAD_BATCH_BYTES = 1 << 20


T = TypeVar("T")

Signature = tuple[tuple[str, tuple[int, ...], str], ...]
"""(name, shape, dtype) of every input of a pass, sorted: passes with equal ones share a batch."""


@runtime_checkable
class LazyPasses(Protocol):
    """Passes made on demand (so a request never holds all its inputs at once), that know their
    shapes beforehand. A plain list of passes works too."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Pass: ...

    def signature(self, i: int) -> Signature:
        """The inputs' (name, shape, dtype) of pass ``i``, without making it."""


def _named(p: Pass, meta: ModelMetadata) -> dict[str, np.ndarray]:
    if isinstance(p, Mapping):
        return {str(k): np.asarray(v) for k, v in p.items()}
    return {meta.inputs[0].name: p}


def _signature(p: dict[str, np.ndarray]) -> Signature:
    return tuple(sorted((k, tuple(v.shape), v.dtype.str) for k, v in p.items()))


def _pass_bytes(sig: Signature) -> int:
    return sum(math.prod(shape) * np.dtype(dtype).itemsize for _, shape, dtype in sig)


def _assemble(get: Callable[[int], dict[str, np.ndarray]], chunk: list[int],
              sig: Signature) -> dict[str, np.ndarray]:
    """The batch of passes ``chunk``: each made (``get``) and stacked along a new first axis."""
    items = [get(i) for i in chunk]
    if len(items) == 1:  # a batch of one: the pass itself where it is contiguous, not a copy
        return {k: np.ascontiguousarray(items[0][k])[None] for k, _, _ in sig}
    return {k: np.stack([item[k] for item in items]) for k, _, _ in sig}


class ChainedPasses:
    """The passes of several images as one sequence, made on demand in each part's own way,
    so that one runner request groups passes of different images that share input shapes into
    the same backend calls (a batch of eight same-size photos runs as if it were one)."""

    def __init__(self, parts: Sequence[Sequence[Pass]], meta: ModelMetadata) -> None:
        self._parts = list(parts)
        self._meta = meta
        self._index = [(k, j) for k, part in enumerate(self._parts) for j in range(len(part))]

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> Pass:
        k, j = self._index[i]
        return self._parts[k][j]

    def signature(self, i: int) -> Signature:
        """The inputs' (name, shape, dtype) of pass ``i`` (a lazy part's without making it)."""
        k, j = self._index[i]
        part = self._parts[k]
        if isinstance(part, LazyPasses):
            return part.signature(j)
        return _signature(_named(part[j], self._meta))


def chain_passes(parts: Sequence[Sequence[Pass]], meta: ModelMetadata) -> Sequence[Pass]:
    """The passes of ``parts`` (one sequence per image) as one sequence for :meth:`InferenceRunner.run`,
    in order (a single part as it is)."""
    if len(parts) == 1:
        return parts[0]
    return ChainedPasses(parts, meta)


class RunnerObserver(Protocol):
    """Receives what the runner does (for metrics)."""

    def batch(self, model: str, passes: int) -> None:
        """One backend call of ``passes`` items for ``model`` was made."""

    def occupancy(self, waiting: int, running: int) -> None:
        """Requests waiting for a slot and running inference, after a change."""


class InferenceRunner:
    """Runs lists of network passes for requests under concurrency, queue and time limits."""

    def __init__(self, backend: Backend, settings: Settings,
                 observer: RunnerObserver | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.observer = observer
        self._slots = asyncio.Semaphore(settings.max_concurrency)
        self._waiting = 0
        self._running = 0

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now."""
        return self._waiting

    @property
    def running(self) -> int:
        """Requests running inference now."""
        return self._running

    def batch_limit(self, meta: ModelMetadata, signature: Signature | None = None) -> int:
        """Most passes per backend call for ``meta`` (of inputs ``signature``: pixel budget)."""
        model_max = meta.max_batch_size if meta.max_batch_size > 0 else 1
        limit = max(1, min(model_max, self.settings.max_batch))
        if signature:
            pixels = max((shape[-1] * shape[-2] for _, shape, _ in signature if len(shape) >= 2),
                         default=0)
            if pixels:
                limit = min(limit, max(1, self.settings.max_batch_pixels // pixels))
        return limit

    async def run(
        self,
        meta: ModelMetadata,
        passes: Sequence[Pass],
        *,
        timings: Timings | None = None,
        deadline: float | None = None,
        on_output: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        """Run ``passes`` (input name -> array, or one array for the first input; *without* the
        batch dim) through model ``meta``.

        Returns one dict of outputs per pass (batch dim removed), in the order of ``passes``;
        with ``on_output``, each pass's outputs go to ``on_output(index, outputs)`` (on the event
        loop, as soon as its batch returns: keep it short) instead and the list is empty.
        Raises :class:`Overloaded` when the queue is full and :class:`Timeout` past the deadline
        (``deadline`` in the event loop's clock; default ``request_timeout_s`` from now): waiting
        or running, the request leaves at once, its slot is freed and its remaining batches
        never start.
        """
        return await self._admit(lambda: self._run_batches(meta, passes, on_output), timings,
                                 deadline)

    async def call(
        self,
        meta: ModelMetadata,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        timings: Timings | None = None,
        deadline: float | None = None,
    ) -> dict[str, np.ndarray]:
        """One backend call of ``model`` (a helper of ``meta``'s, e.g. its served merge) on
        behalf of a request for ``meta``, held to the same slots, queue and deadline as
        :meth:`run`; ``inputs`` as the model takes them."""
        # Not reported as a batch: its passes are batched where ``model`` runs, not here.
        return await self._admit(lambda: self.backend.infer(model, inputs), timings, deadline)

    async def _admit(self, work: Callable[[], Awaitable[T]], timings: Timings | None,
                     deadline: float | None) -> T:
        # Admission is decided synchronously (no await between the check and the reservation),
        # so concurrent requests cannot all slip past a full queue.
        if self._slots.locked() and self._waiting >= self.settings.max_queue:
            raise Overloaded(
                "too many requests in flight; retry later", retry_after=self.settings.retry_after_s
            )
        self._waiting += 1
        self._gauge()
        t0 = time.perf_counter()
        queued = [True]  # cleared by _admitted once it holds a slot
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + self.settings.request_timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                return await self._admitted(work, timings, t0, queued)
        except TimeoutError:
            raise Timeout(
                f"inference did not finish within {self.settings.request_timeout_s:g} s"
            ) from None
        finally:
            if queued[0]:  # timed out or cancelled while waiting
                self._waiting -= 1
                self._gauge()

    async def _admitted(
        self,
        work: Callable[[], Awaitable[T]],
        timings: Timings | None,
        t0: float,
        queued: list[bool],
    ) -> T:
        await self._slots.acquire()
        queued[0] = False
        self._waiting -= 1
        self._running += 1
        self._gauge()
        try:
            if timings is not None:
                timings.add("queue", time.perf_counter() - t0)
            t1 = time.perf_counter()
            out = await work()
            if timings is not None:
                timings.add("inference", time.perf_counter() - t1)
            return out
        finally:
            self._running -= 1
            self._slots.release()
            self._gauge()

    async def _run_batches(
        self, meta: ModelMetadata, passes: Sequence[Pass],
        on_output: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> list[dict[str, np.ndarray]]:
        if isinstance(passes, LazyPasses):
            lazy: LazyPasses = passes
            signatures = [lazy.signature(i) for i in range(len(lazy))]

            def get(i: int) -> dict[str, np.ndarray]:
                return _named(lazy[i], meta)
        else:
            named = [_named(p, meta) for p in passes]
            signatures = [_signature(p) for p in named]
            get = named.__getitem__
        # Only passes whose every input has the same name, shape and dtype can share a batch.
        groups: dict[Signature, list[int]] = defaultdict(list)
        for i, sig in enumerate(signatures):
            groups[sig].append(i)
        results: list[dict[str, np.ndarray] | None] = [None] * len(signatures)
        batches: list[tuple[Signature, list[int]]] = []
        for sig, idx in groups.items():
            limit = self.batch_limit(meta, sig)
            batches += [(sig, idx[s : s + limit]) for s in range(0, len(idx), limit)]

        def make(b: int) -> "asyncio.Future[dict[str, np.ndarray]]":
            sig, chunk = batches[b]
            if len(chunk) * _pass_bytes(sig) >= OFFLOAD_BATCH_BYTES:
                return asyncio.ensure_future(asyncio.to_thread(_assemble, get, chunk, sig))
            done = asyncio.get_running_loop().create_future()
            done.set_result(_assemble(get, chunk, sig))
            return done

        # The next batch is made while the backend runs this one: a scale's resize and the
        # stacking copies stay out of the inference time (one batch more of inputs is held).
        upcoming = make(0) if batches else None
        try:
            for b, (_, chunk) in enumerate(batches):
                assert upcoming is not None
                batch = await upcoming
                upcoming = make(b + 1) if b + 1 < len(batches) else None
                outputs = await self.backend.infer(meta.name, batch)
                del batch
                if self.observer is not None:
                    self.observer.batch(meta.name, len(chunk))
                for j, i in enumerate(chunk):
                    if on_output is not None:
                        on_output(i, {k: v[j] for k, v in outputs.items()})
                    else:
                        results[i] = {k: v[j] for k, v in outputs.items()}
                del outputs
        finally:
            # The request failed or left: the batch made ahead is not needed, nor is its error.
            if upcoming is not None and not upcoming.cancel() and not upcoming.cancelled():
                upcoming.exception()
        return [] if on_output is not None else results  # type: ignore[return-value]

    def _gauge(self) -> None:
        if self.observer is not None:
            self.observer.occupancy(self._waiting, self._running)
