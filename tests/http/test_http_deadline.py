"""Budgets and deadlines over real HTTP: a too costly request is refused before any work, and a
request past its deadline answers 504 at the deadline with no work left running."""

from __future__ import annotations

import time

import httpx

from tests.helpers import photo_png, repo_settings


def test_detection_budget_refuses_a_huge_tta_before_inference(detector_url: str) -> None:
    """The issue's case: a small PNG with six 4x scales and flip fits the segmentation budget
    (64 M) but not detection's own (8 M); 422 at once."""
    t0 = time.perf_counter()
    r = httpx.post(f"{detector_url}/detect", files={"file": ("a.png", photo_png((320, 240)), "image/png")},
                   data={"scales": "[4,4,4,4,4,4]", "flip": "true"}, timeout=60)
    took = time.perf_counter() - t0
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "too_many_pixels" and "8000000" in r.json()["error"]["message"]
    assert took < 2.0


def test_past_the_deadline_the_answer_is_504_at_once(live_server, model_repo) -> None:
    url = live_server(repo_settings(model_repo, request_timeout_s=0.5, max_batch=1))
    png = photo_png((1500, 1000))
    heavy = {"model": "seg_cityscapes", "scales": "[2,2.5,3,3.5,4]", "flip": "true"}
    t0 = time.perf_counter()
    r = httpx.post(f"{url}/segment", files={"file": ("a.png", png, "image/png")}, data=heavy,
                   timeout=60)
    took = time.perf_counter() - t0
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "timeout"
    assert took < 2.5, f"504 after {took:.1f} s for a 0.5 s deadline"
    # Nothing of it keeps the slots: a small request right after is served.
    ok = httpx.post(f"{url}/segment", files={"file": ("a.png", photo_png((64, 48)), "image/png")},
                    data={"model": "seg_cityscapes"}, timeout=60)
    assert ok.status_code == 200, ok.text
