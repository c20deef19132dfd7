"""The shape every task has, and the one pipeline that runs any of them.

A task (``service/tasks/<task>/``) is four steps over one decoded image, in this order:

1. ``resolve(options, extras, meta, limits)``: the request's options with the model's protocol
   defaults filled in, checked against the model and the limits (422s) *before* the image is
   decoded;
2. ``plan(resolved, meta, image_size)``: the network passes the request needs (scales, flips,
   windows, face crops, detection resizes). A :class:`Plan` knows its pass count and network
   pixels, so the limits are checked before any pixel work; ``plan.passes(image)`` makes them;
3. ``merge(plan, outputs)``: the official ensembling or decoding of the passes' outputs (or
   ``device_merge``, the same run by the backend where the network runs, when it can);
4. ``respond(image, meta, resolved, plan, merged, media)``: the answer in the negotiated media
   type (a task response model, or :class:`Binary` bytes).

:func:`run_task` strings them together with the runner in between and times each stage; the web
layer only reads the request, picks the model, decodes the image and writes the answer.

A task may need another task's answer first (:class:`Upstream`): landmarks without face boxes
run face detection on the same image, through the same runner, within the same deadline, and
plan their crops from the detected faces. The flow stays one-way: the upstream task (face
detection) knows nothing of its user; :func:`resolve_upstream` picks the upstream model and
resolves its options before any pixel work, :func:`run_task` runs its plan, passes and merge
and hands the merged answer to the task's ``attach`` before the task plans.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generic, Protocol, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel

from service.contract import ModelMetadata, Task
from service.errors import ModelNotFound, Timeout, Unprocessable
from service.runtime import memory
from service.runtime.registry import ModelRegistry
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
    upstream: "Upstream | None" = None
    """Another task whose answer some requests of this one need first (landmarks: faces)."""
    device_merge: Callable[[Any, list[dict[str, np.ndarray]], Any, InferenceRunner],
                           Awaitable[Any | None]] | None = None
    """The merge run by the backend where the network runs (segmentation's merge graph); its
    None means "not here": ``merge`` runs in the gateway instead."""


@dataclass(frozen=True)
class Upstream:
    """A task run before this one when a request needs its answer (one-way: ``task`` does not
    know its user).

    ``options(resolved)`` gives the upstream task's options for this request (their ``model``
    names the upstream model; None: the request does not need it). When no model of the
    upstream task is served and the request named none, ``without(resolved)`` gives the request
    to run without it (None: 404 as for any missing model). ``attach(resolved, merged, meta)``
    puts the upstream's merged answer (and the model that made it) into this task's request.
    """

    task: "TaskDef[Any, Any, Any]"
    options: Callable[[Any], BaseModel | None]
    attach: Callable[[Any, Any, ModelMetadata], Any]
    without: Callable[[Any], Any | None] = lambda _resolved: None


@dataclass(frozen=True)
class UpstreamRun:
    """The upstream task of one request, resolved: its model and options."""

    task: "TaskDef[Any, Any, Any]"
    meta: ModelMetadata
    resolved: Any


def resolve_upstream(task: "TaskDef[Any, Any, Any]", resolved: Any, registry: ModelRegistry,
                     limits: Limits) -> tuple[Any, UpstreamRun | None]:
    """The request (possibly changed to go without its upstream) and its resolved upstream run
    (None: not needed). 404/400/422 here, before the image is decoded."""
    up = task.upstream
    options = up.options(resolved) if up is not None else None
    if up is None or options is None:
        return resolved, None
    name = getattr(options, "model", None)
    try:
        meta = registry.resolve(name, up.task.name)
    except ModelNotFound:
        fallback = up.without(resolved) if name is None else None
        if fallback is None:
            raise
        return fallback, None
    return resolved, UpstreamRun(up.task, meta, up.task.resolve(options, {}, meta, limits))


async def _infer(plan: Plan, image: np.ndarray, meta: ModelMetadata, runner: InferenceRunner,
                 deadline: float) -> list[dict[str, np.ndarray]]:
    """An upstream plan's passes made and run (no pass: nothing to run)."""
    if plan.n_passes == 0:
        return []
    passes: Sequence[Pass] = await asyncio.to_thread(plan.passes, image)
    return await runner.run(meta, passes, deadline=deadline)


async def run_task(task: TaskDef[Any, Any, Any], image: np.ndarray, meta: ModelMetadata,
                   resolved: Any, runner: InferenceRunner, limits: Limits, *,
                   timings: Timings | None = None, media: str = JSON,
                   upstream: UpstreamRun | None = None) -> Answer:
    """plan -> passes -> infer -> merge -> respond for one decoded ``H x W x 3`` uint8 image.

    CPU work runs in worker threads (the event loop stays free); stages are timed as
    ``preprocess``, ``queue``/``inference`` (by the runner), ``postprocess`` and ``encode``.
    The whole run has ``limits.timeout_s``: past it :class:`~service.errors.Timeout` (504) is
    raised at once, the inference in flight is stopped and nothing further starts (a CPU step
    already running in a thread finishes there, its result unused).

    ``upstream`` (from :func:`resolve_upstream`) runs first, within the same deadline, timed as
    one stage named after its task; its merged answer goes to ``task.upstream.attach`` and only
    then does ``task`` plan (its limits are checked then, before its pixel work).
    """
    timings = timings if timings is not None else Timings()
    size = (int(image.shape[0]), int(image.shape[1]))
    up_plan = plan = None
    if upstream is not None:
        if task.upstream is None or task.upstream.task is not upstream.task:
            raise ValueError(f"task {task.name} has no upstream {upstream.task.name}")
        up_plan = upstream.task.plan(upstream.resolved, upstream.meta, size)
        limits.check(up_plan, upstream.task.pixel_budget)
    else:
        plan = task.plan(resolved, meta, size)
        limits.check(plan, task.pixel_budget)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout_s
    try:
        async with asyncio.timeout_at(deadline):
            if upstream is not None and up_plan is not None and task.upstream is not None:
                # The upstream's queue and inference are inside its one stage.
                with timings.stage(upstream.task.name):
                    up_out = await _infer(up_plan, image, upstream.meta, runner, deadline)
                    found = await asyncio.to_thread(upstream.task.merge, up_plan, up_out)
                del up_out
                resolved = task.upstream.attach(resolved, found, upstream)
                plan = task.plan(resolved, meta, size)
                limits.check(plan, task.pixel_budget)
            assert plan is not None
            with timings.stage("preprocess"):
                passes: Sequence[Pass] = (await asyncio.to_thread(plan.passes, image)
                                          if plan.n_passes else [])
            outputs = (await runner.run(meta, passes, timings=timings, deadline=deadline)
                       if passes else [])
            del passes  # the inputs of a large request are not kept during the merge
            with timings.stage("postprocess"):
                merged = (await task.device_merge(plan, outputs, meta, runner)
                          if task.device_merge is not None else None)
                if merged is None:
                    merged = await asyncio.to_thread(task.merge, plan, outputs)
            del outputs
            with timings.stage("encode"):
                answer = await asyncio.to_thread(task.respond, image, meta, resolved, plan,
                                                 merged, media)
    except TimeoutError:
        raise Timeout(f"the request did not finish within {limits.timeout_s:g} s") from None
    finally:
        # Large images weigh as much as many network pixels (decoded, as floats, merged maps).
        work = max(plan.n_pixels if plan is not None else 0,
                   up_plan.n_pixels if up_plan is not None else 0,
                   int(image.shape[0]) * int(image.shape[1]))
        if limits.release_memory_pixels and work >= limits.release_memory_pixels:
            # Off the request's path: the answer does not wait for the trim (~25 ms).
            loop.run_in_executor(None, memory.release)
    if isinstance(answer, TaskResult):
        answer.timings_ms = timings.as_ms()
    return answer
