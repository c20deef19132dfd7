"""Precision tiers through Triton: the CPU twin serves the BF16 (OpenVINO) and INT8 entries with
the engine their metadata names, and the gateway over Triton answers with their precision and
the same label maps as the embedded backend (the same engine and settings in both)."""

from __future__ import annotations

import io
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import TIER_MODEL
from tests.helpers import photo_png
from tests.triton.harness import TritonServer, live_gateway

TIERS = {"fp32": TIER_MODEL, "bf16": f"{TIER_MODEL}_bf16", "int8": f"{TIER_MODEL}_int8"}


@pytest.fixture(scope="module")
def tier_gateways(serving_repo: Path, triton_server: TritonServer) -> Iterator[dict[str, str]]:
    from service.settings import Settings

    settings = {
        "embedded": Settings(backend="embedded", repository=serving_repo, ort_intra_threads=1),
        "grpc": Settings(backend="triton", triton_url=triton_server.url("grpc"),
                         repository=serving_repo),
    }
    with ExitStack() as stack:
        yield {name: stack.enter_context(live_gateway(s)) for name, s in settings.items()}


def test_twin_config_keeps_the_precision(triton_cpu_repo: Path) -> None:
    from model_export.repository import read_config

    cfg = read_config(triton_cpu_repo / TIERS["bf16"])
    assert cfg.backend == "python"
    meta = json.loads(cfg.parameters["hrnet_metadata"].string_value)
    assert meta["precision"]["precision"] == "bf16" and meta["precision"]["engine"] == "openvino"


@pytest.mark.parametrize("tier", list(TIERS))
def test_tiers_served_through_triton(tier_gateways: dict[str, str], tier: str) -> None:
    png = photo_png((112, 80), "astronaut")
    labels = {}
    for backend, base in tier_gateways.items():
        r = httpx.post(f"{base}/segment", files={"file": ("p.png", png, "image/png")},
                       data={"options": json.dumps({"model": TIERS[tier], "flip": True})},
                       timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"]["precision"] == tier, backend
        assert r.headers["x-model-precision"] == tier
        png_map = body["label_map"]["data"]
        import base64

        labels[backend] = np.asarray(Image.open(io.BytesIO(base64.b64decode(png_map))))
    agree = float(np.mean(labels["embedded"] == labels["grpc"]))
    # Same engine, precision hint and thread count on both sides: the same arithmetic.
    assert agree >= 0.999, f"{tier}: embedded vs Triton labels agree {agree:.4f}"
