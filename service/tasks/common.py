"""The shape every task has, and the one pipeline that runs any of them.

A task (``service/tasks/<task>/``) is four steps over one decoded image, in this order:

1. ``resolve(options, extras, meta, limits)``: the request's options with the model's protocol
   defaults filled in, checked against the model and the limits (422s) *before* the image is
   decoded;
2. ``plan(resolved, meta, image_size)``: the network passes the request needs (scales, flips,
   windows, face crops, detection resizes). A :class:`Plan` knows its pass count and network
   pixels, so the limits are checked before any pixel work; ``plan.passes(image)`` makes them;
3. ``merge(plan, outputs)``: the official ensembling or decoding of the passes' outputs (or
   ``device_merge``, the same run by the backend where the network runs, when it can; or
   ``served_merge``: inference and merge in one backend call on the server, so the outputs
   never reach the gateway; or ``early_merge``: the same merge in the gateway, started while the
   passes still run, fed each pass's outputs as they come);
4. ``respond(image, meta, resolved, plan, merged, media)``: the answer in the negotiated media
   type (a task response model, or :class:`Binary` bytes).

:func:`run_batch` strings them together with the runner in between and times each stage, for
the images of one request (:func:`run_task`: one image); the web layer only reads the request,
picks the model, decodes the images and writes the answer. The passes of all images of a request
run as one runner request, so passes of images that share a shape share backend calls; an image
that breaks its own limits fails alone.

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
from typing import Any, Awaitable, Callable, Generic, Mapping, Protocol, Sequence, TypeVar

import numpy as np
from pydantic import BaseModel

from service.contract import ModelMetadata, Task
from service.errors import ModelNotFound, ServiceError, Timeout, Unprocessable
from service.runtime import memory
from service.runtime.registry import ModelRegistry
from service.runtime.runner import InferenceRunner, Pass, chain_passes
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
    release_memory_idle_s: float = 2.0
    """Seconds without a running request before that memory goes back (0: at once)."""
    max_request_network_pixels: int = 128_000_000
    """Network pixels summed over all images of one request (segmentation, landmarks, faces)."""
    max_request_detection_pixels: int = 32_000_000
    """Detection network pixels summed over all images of one request."""

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        """The limits configured in ``settings``."""
        return cls(max_passes=settings.max_passes, max_network_pixels=settings.max_network_pixels,
                   max_detection_pixels=settings.max_detection_pixels,
                   max_faces=settings.max_faces, timeout_s=settings.request_timeout_s,
                   release_memory_pixels=settings.release_memory_pixels,
                   release_memory_idle_s=settings.release_memory_idle_s,
                   max_request_network_pixels=settings.max_request_network_pixels,
                   max_request_detection_pixels=settings.max_request_detection_pixels)

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


    def check_total(self, plans: Sequence["Plan"], budget: str = "max_network_pixels") -> None:
        """422 ``too_many_pixels`` when the plans of a request's images are together over the
        request's budget (the ``max_request_*`` field of the per-image ``budget``)."""
        if len(plans) < 2:
            return  # one image: its own limit (checked by :meth:`check`) is the request's
        total = sum(p.n_pixels for p in plans)
        field_name = "max_request_" + budget.removeprefix("max_")
        limit = getattr(self, field_name)
        if total > limit:
            raise Unprocessable(
                f"the request's {len(plans)} images need {total} network-input pixels together; "
                f"the limit is {limit} ({field_name}): send fewer images per request",
                code="too_many_pixels")


class EarlyMerge(Protocol):
    """A merge that starts before the last pass is in (a task's ``early_merge``)."""

    def add(self, index: int, outputs: dict[str, np.ndarray]) -> None:
        """Pass ``index``'s outputs (plan order), on the event loop as they arrive: quick."""

    def finish(self) -> Any:
        """After the last pass: what the task's ``merge`` gives (blocks: a worker thread)."""

    def close(self) -> None:
        """Drop the work (after :meth:`finish`, or when the request ends without it)."""


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
    served_merge: Callable[[Any, Sequence[Pass], Any, InferenceRunner, float, Timings],
                           Awaitable[Any | None]] | None = None
    """Infer and merge in one backend call, on the server (segmentation through Triton's
    ``<model>__segment``): the network's outputs never reach the gateway. Its None means "not
    here": the passes run and are merged as usual."""
    early_merge: Callable[[Any, Any, InferenceRunner], EarlyMerge | None] | None = None
    """The gateway's merge begun while the passes run (segmentation: the scales already in are
    summed on a low-priority thread beside inference); its None means "not worth it here": the
    outputs are collected and ``merge`` runs after the last pass."""


@dataclass(frozen=True)
class Upstream:
    """A task run before this one when a request needs its answer (one-way: ``task`` does not
    know its user).

    ``options(resolved)`` gives the upstream task's options for this request (their ``model``
    names the upstream model; None: the request does not need it). When no model of the
    upstream task is served and the request named none, ``without(resolved)`` gives the request
    to run without it (None: 404 as for any missing model). ``attach(resolved, merged, run)``
    puts the upstream's merged answer (and its :class:`UpstreamRun`: the model that made it and
    its options) into this task's request.
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


@dataclass(frozen=True)
class Job:
    """One image of a request, ready to run: its decoded ``H x W x 3`` uint8 pixels, its
    resolved request and its resolved upstream run (None: not needed)."""

    image: np.ndarray
    resolved: Any
    upstream: UpstreamRun | None = None


Outcome = Answer | ServiceError
"""What one image of a request comes to: its answer, or the error that stopped it alone."""


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[0]), int(image.shape[1])


async def _make_passes(plans: dict[int, Plan], jobs: Mapping[int, Job]) -> dict[int, Sequence[Pass]]:
    """Each plan's passes (lazy ones stay lazy), made in a worker thread."""
    return {i: await asyncio.to_thread(p.passes, jobs[i].image)
            for i, p in plans.items() if p.n_passes}


async def _infer(passes: dict[int, Sequence[Pass]], meta: ModelMetadata, runner: InferenceRunner,
                 deadline: float, timings: Timings | None = None,
                 early: Mapping[int, EarlyMerge] | None = None
                 ) -> dict[int, list[dict[str, np.ndarray]]]:
    """The passes of several images run as one runner request (one slot, one queue wait), so
    that passes of different images with the same input shapes share backend calls. The outputs
    of an image with an early merge go to it as they arrive (its list stays empty)."""
    if not passes:
        return {}
    order = list(passes)
    chained = chain_passes([passes[i] for i in order], meta)
    split: dict[int, list[Any]] = {}
    if not early:
        outputs = await runner.run(meta, chained, timings=timings, deadline=deadline)
        start = 0
        for i in order:
            split[i] = outputs[start:start + len(passes[i])]
            start += len(passes[i])
        return split
    split = {i: [] if i in early else [None] * len(passes[i]) for i in order}
    owner = [(i, j) for i in order for j in range(len(passes[i]))]

    def deliver(k: int, out: dict[str, np.ndarray]) -> None:
        i, j = owner[k]
        if i in early:
            early[i].add(j, out)
        else:
            split[i][j] = out

    await runner.run(meta, chained, timings=timings, deadline=deadline, on_output=deliver)
    return split


async def _served(task: TaskDef[Any, Any, Any], plans: dict[int, Plan],
                  passes: dict[int, Sequence[Pass]], meta: ModelMetadata,
                  runner: InferenceRunner, deadline: float, timings: Timings) -> dict[int, Any]:
    """The merged answers of the images the backend ran and merged itself
    (``task.served_merge``); their passes leave ``passes``, the others stay for :func:`_infer`."""
    merged: dict[int, Any] = {}
    if task.served_merge is None:
        return merged
    for i in list(passes):
        done = await task.served_merge(plans[i], passes[i], meta, runner, deadline, timings)
        if done is not None:
            merged[i] = done
            del passes[i]
    return merged


async def _each(indices: Sequence[int], outcomes: list[Any], step: Callable[[int], Any]) -> dict[int, Any]:
    """``step(i)`` in a worker thread for each image still running; a :class:`ServiceError`
    ends that image alone (its outcome), any other error the request."""
    done: dict[int, Any] = {}
    for i in indices:
        if outcomes[i] is not None:
            continue
        try:
            done[i] = await asyncio.to_thread(step, i)
        except ServiceError as exc:
            outcomes[i] = exc
    return done


async def _merge(task: TaskDef[Any, Any, Any], plans: dict[int, Plan],
                 outputs: dict[int, list[dict[str, np.ndarray]]], outcomes: list[Any],
                 meta: ModelMetadata, runner: InferenceRunner,
                 early: Mapping[int, EarlyMerge]) -> dict[int, Any]:
    """Each running image's merge: its early merge finished where it has one, else the
    backend's (``task.device_merge``) where it can, else the gateway's in a worker thread; a
    :class:`ServiceError` ends that image alone."""
    merged: dict[int, Any] = {}
    for i, plan in plans.items():
        if outcomes[i] is not None:
            continue
        out = outputs.pop(i, [])
        try:
            if i in early:
                merged[i] = await asyncio.to_thread(early[i].finish)
                continue
            done = (await task.device_merge(plan, out, meta, runner)
                    if task.device_merge is not None else None)
            merged[i] = done if done is not None else await asyncio.to_thread(task.merge, plan, out)
        except ServiceError as exc:
            outcomes[i] = exc
    return merged


def _early(task: TaskDef[Any, Any, Any], plans: dict[int, Plan],
           passes: dict[int, Sequence[Pass]], meta: ModelMetadata,
           runner: InferenceRunner) -> dict[int, EarlyMerge]:
    """The early merges of the images whose passes the gateway runs and merges (if the task
    has them and finds them worth it)."""
    if task.early_merge is None:
        return {}
    made = {i: task.early_merge(plans[i], meta, runner) for i in passes}
    return {i: m for i, m in made.items() if m is not None}


async def run_task(task: TaskDef[Any, Any, Any], image: np.ndarray, meta: ModelMetadata,
                   resolved: Any, runner: InferenceRunner, limits: Limits, *,
                   timings: Timings | None = None, media: str = JSON,
                   upstream: UpstreamRun | None = None) -> Answer:
    """plan -> passes -> infer -> merge -> respond for one decoded ``H x W x 3`` uint8 image
    (:func:`run_batch` of one image; its error is raised). The answer carries the timings."""
    timings = timings if timings is not None else Timings()
    (outcome,) = await run_batch(task, [Job(image, resolved, upstream)], meta, runner, limits,
                                 timings=timings, media=media)
    if isinstance(outcome, ServiceError):
        raise outcome
    if isinstance(outcome, TaskResult):
        outcome.timings_ms = timings.as_ms()
    return outcome


async def run_batch(task: TaskDef[Any, Any, Any], jobs: Sequence[Job | ServiceError],
                    meta: ModelMetadata, runner: InferenceRunner, limits: Limits, *,
                    timings: Timings | None = None, media: str = JSON) -> list[Outcome]:
    """plan -> passes -> infer -> merge -> respond for the images of one request, in order.

    A job that is already an error (its image did not decode) stays one. Each image is held to
    the per-image limits, and a :class:`~service.errors.ServiceError` of its own steps (its
    plan over a limit, its faces over ``max_faces``) is its outcome while the others go on.
    The request as a whole is held to the ``max_request_*`` totals (422), one runner slot and
    one deadline: the passes of all images run as one runner request, grouped by input shape
    across images, so that images of one size share backend calls; errors of the runner and
    the deadline (429, 503, 504) are the request's.

    CPU work runs in worker threads (the event loop stays free); stages are timed as
    ``preprocess``, ``queue``/``inference`` (by the runner), ``postprocess`` and ``encode``.
    The whole run has ``limits.timeout_s``: past it :class:`~service.errors.Timeout` (504) is
    raised at once, the inference in flight is stopped and nothing further starts (a CPU step
    already running in a thread finishes there, its result unused).

    A job's ``upstream`` (from :func:`resolve_upstream`) runs first, within the same deadline,
    timed as one stage named after its task; its merged answer goes to ``task.upstream.attach``
    and only then does ``task`` plan that image (its limits are checked then, before its pixel
    work).
    """
    timings = timings if timings is not None else Timings()
    outcomes: list[Any] = [j if isinstance(j, ServiceError) else None for j in jobs]
    todo: dict[int, Job] = {i: j for i, j in enumerate(jobs) if isinstance(j, Job)}
    resolved = {i: job.resolved for i, job in todo.items()}
    plans: dict[int, Plan] = {}
    up_plans: dict[int, Plan] = {}
    for i, job in todo.items():  # every plan before any pixel work; an image over its limits fails alone
        try:
            if job.upstream is not None:
                if task.upstream is None or task.upstream.task is not job.upstream.task:
                    raise ValueError(f"task {task.name} has no upstream {job.upstream.task.name}")
                up_plans[i] = job.upstream.task.plan(job.upstream.resolved, job.upstream.meta,
                                                     _size(job.image))
                limits.check(up_plans[i], job.upstream.task.pixel_budget)
            else:
                plans[i] = task.plan(job.resolved, meta, _size(job.image))
                limits.check(plans[i], task.pixel_budget)
        except ServiceError as exc:
            plans.pop(i, None)
            up_plans.pop(i, None)
            outcomes[i] = exc
    limits.check_total(list(plans.values()), task.pixel_budget)
    if task.upstream is not None:
        limits.check_total(list(up_plans.values()), task.upstream.task.pixel_budget)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.timeout_s
    early: dict[int, EarlyMerge] | None = None
    memory.request_started()
    try:
        async with asyncio.timeout_at(deadline):
            if up_plans and task.upstream is not None:
                await _run_upstream(task, todo, up_plans, plans, resolved, outcomes, meta, runner,
                                    limits, deadline, timings)
            with timings.stage("preprocess"):
                passes = await _make_passes(plans, todo)
            merged = await _served(task, plans, passes, meta, runner, deadline, timings)
            early = _early(task, plans, passes, meta, runner)
            outputs = await _infer(passes, meta, runner, deadline, timings, early)
            del passes  # the inputs of a large request are not kept during the merge
            with timings.stage("postprocess"):
                merged.update(await _merge(task, {i: p for i, p in plans.items()
                                                  if i not in merged},
                                           outputs, outcomes, meta, runner, early))
            del outputs
            with timings.stage("encode"):
                answers = await _each(list(merged), outcomes, lambda i: task.respond(
                    todo[i].image, meta, resolved[i], plans[i], merged.pop(i), media))
            for i, answer in answers.items():
                outcomes[i] = answer
    except TimeoutError:
        raise Timeout(f"the request did not finish within {limits.timeout_s:g} s") from None
    finally:
        for m in (early or {}).values():  # stops background work of a failed or late request
            m.close()
        # Large images weigh as much as many network pixels (decoded, as floats, merged maps).
        work = max([p.n_pixels for p in (*plans.values(), *up_plans.values())]
                   + [j.image.shape[0] * j.image.shape[1] for j in todo.values()] + [0])
        memory.request_finished(
            loop, large=bool(limits.release_memory_pixels) and work >= limits.release_memory_pixels,
            delay_s=limits.release_memory_idle_s)
    return outcomes


async def _run_upstream(task: TaskDef[Any, Any, Any], jobs: Mapping[int, Job],
                        up_plans: dict[int, Plan], plans: dict[int, Plan],
                        resolved: dict[int, Any], outcomes: list[Any], meta: ModelMetadata,
                        runner: InferenceRunner, limits: Limits, deadline: float,
                        timings: Timings) -> None:
    """The upstream task of the images that need it (one runner request per upstream model),
    its answers attached to their requests, and those images planned (into ``plans``)."""
    assert task.upstream is not None
    up = task.upstream
    # The upstream's queue and inference are inside its one stage.
    with timings.stage(up.task.name):
        by_model: dict[str, list[int]] = {}
        for i in up_plans:
            by_model.setdefault(jobs[i].upstream.meta.name, []).append(i)  # type: ignore[union-attr]
        for idx in by_model.values():
            group = {i: up_plans[i] for i in idx}
            up_meta = jobs[idx[0]].upstream.meta  # type: ignore[union-attr]
            outputs = await _infer(await _make_passes(group, jobs), up_meta, runner, deadline)
            found = await _each(idx, outcomes, lambda i: up.task.merge(group[i], outputs.pop(i, [])))
            del outputs
            for i, merged in found.items():
                try:
                    resolved[i] = up.attach(resolved[i], merged, jobs[i].upstream)
                    plans[i] = task.plan(resolved[i], meta, _size(jobs[i].image))
                    limits.check(plans[i], task.pixel_budget)
                except ServiceError as exc:
                    plans.pop(i, None)
                    outcomes[i] = exc
    limits.check_total(list(plans.values()), task.pixel_budget)
