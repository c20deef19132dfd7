"""The shape every task has, and the one pipeline that runs any of them.

A task (``service/tasks/<task>/``) is four steps over one decoded image, in this order:

1. ``resolve(options, extras, meta, limits)``: the request's options with the model's protocol
   defaults filled in, checked against the model and the limits (422s) *before* the image is
   decoded;
2. ``plan(resolved, meta, image_size)``: the network passes the request needs (scales, flips,
   windows, face crops, detection resizes). A :class:`Plan` knows its pass count and network
   pixels, so the limits are checked before any pixel work; ``plan.passes(image)`` makes them;
3. ``merge(plan, outputs)``: the official ensembling or decoding of the passes' outputs;
4. ``respond(image, meta, resolved, plan, merged, media)``: the answer in the negotiated media
   type (a task response model, or :class:`Binary` bytes).

:func:`run_task` strings them together with the runner in between and times each stage; the web
layer only reads the request, picks the model, decodes the image and writes the answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Protocol, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel

from service.contract import ModelMetadata, Task
from service.errors import Timeout, Unprocessable
from service.runtime import memory
from service.runtime.runner import InferenceRunner, Pass
from service.settings import Settings
from service.tasks.schemas import TaskResult
from service.timings import Timings

JSON = "application/json"


@dataclass(frozen=True)
class Limits:
    """The per-request limits every task is held to (from the one settings object).

    Network pixels cost differently per network: a detection pixel runs a backbone, a feature
    pyramid and two heads, so detection has its own, smaller budget (``max_detection_pixels``).
    ``timeout_s`` bounds the whole request after decoding (plan, passes, queue, inference, merge,
    encoding): past it the answer is 504 and no further work of the request starts.
    """

    max_passes: int
    max_network_pixels: int
    max_detection_pixels: int
    max_faces: int
    timeout_s: float
    release_memory_pixels: int = 0  # after a request of at least this many network pixels

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        """The limits configured in ``settings``."""
        return cls(max_passes=settings.max_passes, max_network_pixels=settings.max_network_pixels,
                   max_detection_pixels=settings.max_detection_pixels,
                   max_faces=settings.max_faces, timeout_s=settings.request_timeout_s,
                   release_memory_pixels=settings.release_memory_pixels)

    def check(self, plan: "Plan", budget: str = "max_network_pixels") -> None:
        """422 ``too_many_passes`` / ``too_many_pixels`` when ``plan`` is over a limit
        (``budget`` names the pixel limit of the plan's task)."""
        if plan.n_passes > self.max_passes:
            raise Unprocessable(
                f"the request needs {plan.n_passes} network passes; the limit is "
                f"{self.max_passes} ({plan.reduce_hint})", code="too_many_passes")
        limit = getattr(self, budget)
        if plan.n_pixels > limit:
            raise Unprocessable(
                f"the request's passes need {plan.n_pixels} network-input pixels; the limit is "
                f"{limit} ({plan.reduce_hint})", code="too_many_pixels")


class Plan(Protocol):
    """The network passes of one request, known before any pixel is touched."""

    @property
    def n_passes(self) -> int:
        """How many network passes the request runs."""

    @property
    def n_pixels(self) -> int:
        """Network-input pixels of all passes together."""

    @property
    def reduce_hint(self) -> str:
        """How a client makes the plan smaller (for the limit errors)."""

    def passes(self, image: np.ndarray) -> list[Pass]:
        """The passes' graph inputs (name -> array without the batch dim), in plan order."""


@dataclass(frozen=True)
class Binary:
    """An answer that is not JSON: the bytes, their media type (e.g. the label-map PNG) and the
    headers that describe them (e.g. the shape of a raw array)."""

    data: bytes
    media_type: str
    headers: dict[str, str] = field(default_factory=dict)


Resolved = TypeVar("Resolved")
PlanT = TypeVar("PlanT", bound=Plan)
Merged = TypeVar("Merged")
Answer = TaskResult | Binary


@dataclass(frozen=True)
class TaskDef(Generic[Resolved, PlanT, Merged]):
    """One task: its request and answer schemas and its four steps (see the module docstring)."""

    name: Task
    options: type[BaseModel]
    """Validates the options (``extra="forbid"``: unknown names are errors)."""
    json_request: type[BaseModel]
    """The JSON request body (base64 ``image`` + options + extras), as documented."""
    response: type[TaskResult]
    extras: tuple[str, ...]
    """Request fields that are not options (JSON values, e.g. landmarks' ``faces``)."""
    media_types: tuple[str, ...]
    """What the task answers, JSON first (e.g. segmentation also ``image/png``)."""
    resolve: Callable[[Any, dict[str, Any], Any, Limits], Resolved]
    plan: Callable[[Resolved, Any, tuple[int, int]], PlanT]
    merge: Callable[[PlanT, list[dict[str, np.ndarray]]], Merged]
    respond: Callable[[np.ndarray, Any, Resolved, PlanT, Merged, str], Answer]
    pixel_budget: str = "max_network_pixels"
    """The :class:`Limits` field bounding this task's network pixels."""


async def run_task(task: TaskDef[Any, Any, Any], image: np.ndarray, meta: ModelMetadata,
                   resolved: Any, runner: InferenceRunner, limits: Limits, *,
                   timings: Timings | None = None, media: str = JSON) -> Answer:
    """plan -> passes -> infer -> merge -> respond for one decoded ``H x W x 3`` uint8 image.

    CPU work runs in worker threads (the event loop stays free); stages are timed as
    ``preprocess``, ``queue``/``inference`` (by the runner), ``postprocess`` and ``encode``.
    The whole run has ``limits.timeout_s``: past it :class:`~service.errors.Timeout` (504) is
    raised at once, the inference in flight is stopped and nothing further starts (a CPU step
    already running in a thread finishes there, its result unused).
    """
    timings = timings if timings is not None else Timings()
    plan = task.plan(resolved, meta, (int(image.shape[0]), int(image.shape[1])))
    limits.check(plan, task.pixel_budget)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            with timings.stage("preprocess"):
                passes: Sequence[Pass] = await asyncio.to_thread(plan.passes, image)
            outputs = await runner.run(meta, passes, timings=timings, deadline=deadline)
            del passes  # the inputs of a large request are not kept during the merge
            with timings.stage("postprocess"):
                merged = await asyncio.to_thread(task.merge, plan, outputs)
            del outputs
            with timings.stage("encode"):
                answer = await asyncio.to_thread(task.respond, image, meta, resolved, plan,
                                                 merged, media)
    except TimeoutError:
        raise Timeout(f"the request did not finish within {limits.timeout_s:g} s") from None
    finally:
        # Large images weigh as much as many network pixels (decoded, as floats, merged maps).
        work = max(plan.n_pixels, int(image.shape[0]) * int(image.shape[1]))
        if limits.release_memory_pixels and work >= limits.release_memory_pixels:
            # Off the request's path: the answer does not wait for the trim (~25 ms).
            loop.run_in_executor(None, memory.release)
    if isinstance(answer, TaskResult):
        answer.timings_ms = timings.as_ms()
    return answer
