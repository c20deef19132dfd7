"""The metric the autoscalers read (deploy/kubernetes: KEDA ScaledObject, HPA + Prometheus adapter):
``hrnet_inference_load`` = (waiting + running) / ``max_concurrency`` per replica, and its time
integral ``hrnet_inference_load_seconds_total`` (``rate()`` of it = the load averaged over the
window), driven by the runner's real admission control."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.http.metrics import LoadIntegral, Metrics
from service.runtime.runner import InferenceRunner
from service.settings import Settings
from tests.helpers import detector_metadata


def scrape(metrics: Metrics) -> dict[str, float]:
    """Unlabelled samples of the exposition text, as Prometheus would read them."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if not sample.labels:
                out[sample.name] = sample.value
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_load_integral_is_exact_between_changes_and_at_a_scrape() -> None:
    clock = Clock()
    integral = LoadIntegral(clock)
    integral.set(2.0)
    clock.now += 3.0          # 3 s at load 2
    integral.set(0.5)
    clock.now += 4.0          # 4 s at load 0.5, not yet closed by a change
    assert integral.value() == pytest.approx(2.0 * 3 + 0.5 * 4)
    # rate() over the 7 s window: the time-averaged load.
    assert integral.value() / 7.0 == pytest.approx(8.0 / 7.0)


def test_exposition_names_and_the_load_ratio() -> None:
    metrics = Metrics(slots=4)
    before = scrape(metrics)
    assert before["hrnet_inference_slots"] == 4
    assert before["hrnet_inference_load"] == 0
    assert before["hrnet_inference_load_seconds_total"] == 0
    metrics.occupancy(waiting=6, running=4)
    after = scrape(metrics)
    assert after["hrnet_inference_load"] == pytest.approx(2.5)
    assert after["hrnet_inference_waiting"] == 6 and after["hrnet_inference_in_flight"] == 4


class SlowBackend:
    """Holds every backend call until released, so the test sees the runner's queue."""

    name = "slow"

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        await self.release.wait()
        n = len(inputs["image"])
        return {"boxes": np.zeros((n, 0, 4), np.float32), "scores": np.zeros((n, 0), np.float32),
                "labels": np.zeros((n, 0), np.int64)}


def test_the_runners_admission_control_drives_the_load() -> None:
    """Five requests on two slots: load 2.5 while they queue, 0 when done; the integral grew."""
    settings = Settings(max_concurrency=2, max_queue=8)
    metrics = Metrics(slots=settings.max_concurrency)
    meta = detector_metadata()
    one_pass = {"image": np.zeros((3, 32, 32), np.float32),
                "image_size": np.array([32, 32], np.int64)}

    async def main() -> tuple[dict[str, float], dict[str, float]]:
        backend = SlowBackend()
        runner = InferenceRunner(backend, settings, metrics)  # type: ignore[arg-type]
        tasks = [asyncio.create_task(runner.run(meta, [one_pass])) for _ in range(5)]
        for _ in range(50):
            await asyncio.sleep(0.01)
            if runner.waiting == 3:
                break
        await asyncio.sleep(0.05)
        during = scrape(metrics)
        backend.release.set()
        await asyncio.gather(*tasks)
        return during, scrape(metrics)

    during, after = asyncio.run(main())
    assert during["hrnet_inference_in_flight"] == 2 and during["hrnet_inference_waiting"] == 3
    assert during["hrnet_inference_load"] == pytest.approx(2.5)
    assert during["hrnet_inference_load_seconds_total"] > 2.5 * 0.04
    assert after["hrnet_inference_load"] == 0
    assert after["hrnet_inference_load_seconds_total"] >= during["hrnet_inference_load_seconds_total"]
