"""Prometheus metrics on a per-app registry (several apps can live in one process, e.g. in tests).

Endpoints record per-stage wall times in a :class:`~service.timings.Timings` object
(``request.state.timings``); the metrics middleware observes them, the request count and the
latency once the response is ready, labelled with the model the endpoint stored in
``request.state.model``. :class:`Metrics` is also the runner's observer (backend calls, queue).

The autoscaler's signal (deploy/kubernetes, docs/scaling.md) is the runner's admission control
seen per replica: ``hrnet_inference_load`` = (requests waiting + running inference) /
``max_concurrency`` (``hrnet_inference_slots``), and its time integral
``hrnet_inference_load_seconds_total``, whose ``rate()`` is the exact time-averaged load between
two scrapes (a gauge sampled every 15-30 s misses bursts; the integral does not).
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.timings import Timings

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class LoadIntegral(Collector):
    """``hrnet_inference_load_seconds_total``: the integral over time of the load (a counter that
    grows by ``load x seconds``), up to date at every scrape, so ``rate()`` over any window is the
    load averaged over that window whatever the scrape interval."""

    NAME = "hrnet_inference_load_seconds"

    def __init__(self, clock=time.monotonic) -> None:  # type: ignore[no-untyped-def]
        self._clock = clock
        self._lock = threading.Lock()
        self._load = 0.0
        self._since = clock()
        self._total = 0.0

    def set(self, load: float) -> None:
        """The load changed to ``load`` now."""
        with self._lock:
            now = self._clock()
            self._total += self._load * (now - self._since)
            self._load, self._since = load, now

    def value(self) -> float:
        """The integral up to now."""
        with self._lock:
            return self._total + self._load * (self._clock() - self._since)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, self._doc())

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, self._doc(), value=self.value())

    @staticmethod
    def _doc() -> str:
        return ("Time integral of hrnet_inference_load (load x seconds); rate() of it is the "
                "average load over the window: the autoscaler's metric.")


class Metrics:
    """The gateway's metric families on their own :class:`CollectorRegistry`.

    ``slots`` is the runner's ``max_concurrency``: the denominator of the load."""

    def __init__(self, slots: int = 1) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._slots = max(1, int(slots))
        self.requests = Counter(
            "hrnet_requests_total", "Requests by endpoint, model and HTTP status.",
            ["endpoint", "model", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "hrnet_request_seconds", "End-to-end request latency.",
            ["endpoint", "model", "status"], buckets=_BUCKETS, registry=self.registry,
        )
        self.stage = Histogram(
            "hrnet_stage_seconds", "Time per request stage (decode, preprocess, queue, inference, "
            "postprocess, encode).", ["endpoint", "model", "stage"], buckets=_BUCKETS,
            registry=self.registry,
        )
        self.batches = Counter(
            "hrnet_backend_batches_total", "Backend calls by model.", ["model"], registry=self.registry
        )
        self.passes = Counter(
            "hrnet_backend_passes_total", "Network passes (batch items) by model.", ["model"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "hrnet_inference_in_flight", "Requests running inference now.", registry=self.registry
        )
        self.waiting = Gauge(
            "hrnet_inference_waiting", "Requests waiting for an inference slot.", registry=self.registry
        )
        self.slots = Gauge(
            "hrnet_inference_slots", "Inference slots of this replica (max_concurrency).",
            registry=self.registry,
        )
        self.slots.set(self._slots)
        self.load = Gauge(
            "hrnet_inference_load", "(Requests waiting + running inference) / inference slots, "
            "per replica: 1 = every slot busy, no queue.", registry=self.registry,
        )
        self.load_integral = LoadIntegral()
        self.registry.register(self.load_integral)

    def observe_request(
        self, endpoint: str, model: str, status: int, seconds: float, timings: Timings | None
    ) -> None:
        """Record one finished request."""
        labels = (endpoint, model, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)
        if timings is not None:
            for stage, secs in timings.stages.items():
                self.stage.labels(endpoint, model, stage).observe(secs)

    def batch(self, model: str, passes: int) -> None:
        """The runner made one backend call of ``passes`` items (``RunnerObserver``)."""
        self.batches.labels(model).inc()
        self.passes.labels(model).inc(passes)

    def occupancy(self, waiting: int, running: int) -> None:
        """Requests waiting for and holding an inference slot (``RunnerObserver``)."""
        self.waiting.set(waiting)
        self.in_flight.set(running)
        load = (waiting + running) / self._slots
        self.load.set(load)
        self.load_integral.set(load)

    def render(self) -> bytes:
        """The exposition text."""
        return generate_latest(self.registry)


# Paths whose traffic is not worth a time series.
_UNMETERED = {"/metrics", "/healthz", "/readyz", "/docs", "/openapi.json", "/redoc"}


class MetricsMiddleware:
    """Times every request and records it under its route template and model when its answer
    starts (the status is known and every stage timed by then).

    A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``: that one runs the
    application in a task of its own and streams the answer through a memory channel, so the
    head and body of every answer reached the server in different loop turns (two sends, not
    one: :class:`service.http.server.GatewayProtocol`), and each request paid for the task.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNMETERED:
            await self.app(scope, receive, send)
            return
        # Request.state is this dict: endpoints time their stages and name their model in it.
        state = scope.setdefault("state", {})
        state["timings"], state["model"] = Timings(), "-"
        t0 = time.perf_counter()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            observed = True
            endpoint = getattr(scope.get("route"), "path", None) or "unmatched"
            metrics: Metrics | None = getattr(scope["app"].state, "metrics", None)
            if metrics is not None:
                metrics.observe_request(endpoint, str(state["model"]), status,
                                        time.perf_counter() - t0, state["timings"])

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not observed:
                observe(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            if not observed:  # the application failed before answering: the server answers 500
                observe(500)
