"""Execution providers are chosen loudly: a requested provider that this onnxruntime build lacks
stops start-up with a message naming it (unless fallback is allowed: then logged and reported),
and the providers actually running each model are shown by /readyz and /v1/models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from service.errors import ConfigurationError
from service.runtime.backends.embedded import EmbeddedBackend
from service.runtime.backends.providers import (
    CPU, CUDA, TENSORRT, check_session, choose_providers, session_providers,
)
from service.settings import Settings
from tests.helpers import repo_settings, serve


def test_defaults_demand_nothing() -> None:
    assert choose_providers(Settings(), [CPU]).used == [CPU]
    assert choose_providers(Settings(), [TENSORRT, CUDA, CPU]).used == [CUDA, CPU]


def test_a_missing_requested_provider_stops_start_up(model_repo: Path) -> None:
    settings = repo_settings(model_repo, ort_providers=[CUDA, CPU])
    with pytest.raises(ConfigurationError) as err:
        choose_providers(settings, [CPU])
    assert "CUDAExecutionProvider" in err.value.message and "hrnet-serve[gpu]" in err.value.message
    with pytest.raises(ConfigurationError):
        asyncio.run(EmbeddedBackend(settings).start())


def test_fallback_is_allowed_when_asked_and_reported(model_repo: Path) -> None:
    settings = repo_settings(model_repo, ort_providers=[CUDA, CPU], ort_provider_fallback=True)
    with serve(settings) as url:
        ready = httpx.get(f"{url}/readyz").json()
        info = httpx.get(f"{url}/v1/models/seg_cityscapes").json()
    assert ready["status"] == "ready"
    assert ready["providers"]["seg_cityscapes"] == [CPU]
    assert any("CUDAExecutionProvider" in w for w in ready["warnings"])
    assert info["runtime"] == {"backend": "embedded", "providers": [CPU]}


def test_a_silent_session_fallback_is_caught() -> None:
    """ORT drops CUDA without an error when its libraries fail to load: that counts as missing."""
    asked = Settings(ort_providers=[CUDA, CPU])
    choice = choose_providers(asked, [CUDA, CPU])
    with pytest.raises(ConfigurationError, match="could not start CUDAExecutionProvider"):
        check_session("m", choice, [CPU], asked)
    lenient = Settings(ort_providers=[CUDA, CPU], ort_provider_fallback=True)
    assert check_session("m", choose_providers(lenient, [CUDA, CPU]), [CPU], lenient)
    assert check_session("m", choice, [CUDA, CPU], asked) == []


def test_tensorrt_options_cache_fp16_and_profiles(model_metadata) -> None:
    settings = Settings(ort_providers=[TENSORRT, CUDA, CPU], ort_tensorrt_fp16=True,
                        ort_tensorrt_cache_dir=Path("/var/cache/trt"))
    choice = choose_providers(settings, [TENSORRT, CUDA, CPU])
    seg = session_providers(choice, model_metadata["seg_cityscapes"], settings)
    name, options = seg[0]
    assert name == TENSORRT and seg[1:] == [CUDA, CPU]
    assert options["trt_fp16_enable"] == "True" and options["trt_engine_cache_enable"] == "True"
    assert options["trt_engine_cache_path"] == "/var/cache/trt/seg_cityscapes"
    # Cityscapes protocol of the test model: base 256, crop 128x256, batch up to 4.
    assert options["trt_profile_min_shapes"] == "image:1x3x32x32"
    assert options["trt_profile_opt_shapes"] == "image:2x3x128x256"
    assert options["trt_profile_max_shapes"] == "image:4x3x256x256"
    face = session_providers(choice, model_metadata["face_300w"], settings)
    assert face[0][1]["trt_profile_max_shapes"] == "image:4x3x256x256"
