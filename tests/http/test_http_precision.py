"""Precision over HTTP: every answer names the precision that ran (``model.precision``, and the
``X-Model-Precision`` header for binary answers too); /v1/models lists each checkpoint's tiers
with their measured deltas; the default model stays FP32."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import TIER_MODEL
from tests.helpers import photo_png, repo_settings, serve


@pytest.fixture(scope="module")
def tier_url(tier_repo: Path) -> Iterator[str]:
    with serve(repo_settings(tier_repo)) as url:
        yield url


def test_models_list_tiers_and_deltas(tier_url: str) -> None:
    models = {m["name"]: m for m in httpx.get(f"{tier_url}/v1/models", timeout=30).json()["models"]}
    assert set(models) == {TIER_MODEL, f"{TIER_MODEL}_bf16", f"{TIER_MODEL}_int8"}
    fp32 = models[TIER_MODEL]
    assert fp32["default_for_task"] and fp32["precision"]["precision"] == "fp32"
    assert fp32["precision"]["deltas"] is None and fp32["base_model"] is None
    tiers = {t["precision"]: t for t in fp32["tiers"]}
    assert list(tiers) == ["fp32", "bf16", "int8"]
    assert tiers["bf16"] == {**tiers["bf16"], "model": f"{TIER_MODEL}_bf16", "engine": "openvino"}
    for p in ("bf16", "int8"):
        d = tiers[p]["deltas"]
        assert 0 < d["label_agreement"] < 1 and d["class_agreement"] and d["images"] == 3
        assert models[f"{TIER_MODEL}_{p}"]["tiers"] == fp32["tiers"]  # the same list from any tier
        assert models[f"{TIER_MODEL}_{p}"]["base_model"] == TIER_MODEL
    assert "scikit-image" in tiers["int8"]["calibration"]
    one = httpx.get(f"{tier_url}/v1/models/{TIER_MODEL}_int8", timeout=30).json()
    assert one["precision"]["precision"] == "int8" and not one["default_for_task"]


@pytest.mark.parametrize("tier", ["fp32", "bf16", "int8"])
def test_answers_name_the_precision(tier_url: str, tier: str) -> None:
    name = TIER_MODEL if tier == "fp32" else f"{TIER_MODEL}_{tier}"
    png = photo_png((120, 90))
    r = httpx.post(f"{tier_url}/segment", files={"file": ("p.png", png, "image/png")},
                   data={"model": name}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == name and body["model"]["precision"] == tier
    assert body["model"]["engine"] == ("onnxruntime" if tier == "fp32" else body["model"]["engine"])
    assert r.headers["x-model-precision"] == tier
    raw = httpx.post(f"{tier_url}/segment", files={"file": ("p.png", png, "image/png")},
                     data={"model": name}, headers={"Accept": "image/png"}, timeout=120)
    assert raw.status_code == 200 and raw.headers["x-model-precision"] == tier


def test_the_default_is_fp32(tier_url: str) -> None:
    r = httpx.post(f"{tier_url}/segment",
                   files={"file": ("p.png", photo_png((64, 64)), "image/png")}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["model"] == {**r.json()["model"], "name": TIER_MODEL, "precision": "fp32",
                                 "engine": "onnxruntime"}


def test_tier_labels_mostly_agree_with_fp32(tier_url: str) -> None:
    """A served tier's label map is close to FP32's on a real photo (random weights: loosely)."""
    from tests.helpers import read_png

    maps = {}
    for name in (TIER_MODEL, f"{TIER_MODEL}_bf16"):
        r = httpx.post(f"{tier_url}/segment", files={"file": ("p.png", photo_png((96, 96)), "image/png")},
                       data={"model": name}, headers={"Accept": "image/png"}, timeout=120)
        maps[name] = read_png(r.content)
    assert np.mean(maps[TIER_MODEL] == maps[f"{TIER_MODEL}_bf16"]) > 0.5
