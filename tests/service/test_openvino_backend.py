"""OpenVINO behind the embedded backend's interface: an entry whose metadata names the engine
``openvino`` gets an :class:`OpenVINOSession` compiled with its precision as the hint; FP32
on ONNX Runtime stays the default; the registry lists a checkpoint's tiers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from service.contract import ModelMetadata
from service.runtime.backends.embedded import EmbeddedBackend, OrtSession
from service.runtime.backends.openvino import OPENVINO_HINTS, OpenVINOSession, openvino_config
from service.runtime.registry import ModelRegistry
from tests.conftest import TIER_MODEL
from tests.helpers import repo_settings


def _pixels(h: int = 48, w: int = 64, n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (n, 3, h, w)).astype(np.float32)


def test_the_hint_is_always_set() -> None:
    """OpenVINO's default on AVX512-BF16/AMX CPUs is BF16: FP32 and INT8 entries must say f32."""
    assert openvino_config("fp32")["INFERENCE_PRECISION_HINT"] == "f32"
    assert openvino_config("int8")["INFERENCE_PRECISION_HINT"] == "f32"
    assert openvino_config("bf16", threads=2) == {
        "INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False, "INFERENCE_NUM_THREADS": 2}
    with pytest.raises(ValueError, match="fp16"):
        openvino_config("fp16")
    assert set(OPENVINO_HINTS) == {"fp32", "bf16", "int8"}


def test_openvino_fp32_matches_onnxruntime_at_dynamic_sizes(tier_repo: Path) -> None:
    """The same graph in OpenVINO FP32 (what the BF16 tier runs, at FP32) agrees with ONNX
    Runtime at sizes other than the trace size and at batch 2."""
    import onnxruntime as ort

    path = tier_repo / TIER_MODEL / "1" / "model.onnx"
    ov = OpenVINOSession(path, "fp32", threads=1)
    assert ov.inference_precision() == "f32"
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in ((48, 64), (70, 50)):
        x = _pixels(h, w)
        got = ov.run({"image": x})["logits"]
        want = ref.run(None, {"image": x})[0]
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-3 + 1e-4 * np.abs(want).max()


def test_bf16_session_runs_bf16(tier_repo: Path) -> None:
    session = OpenVINOSession(tier_repo / f"{TIER_MODEL}_bf16" / "1" / "model.onnx", "bf16")
    assert session.inference_precision() == "bf16"
    out = session.run({"image": _pixels()}, session.begin())
    assert out["logits"].shape == (2, 20, 12, 16) and np.isfinite(out["logits"]).all()


def test_embedded_backend_picks_the_session_by_metadata(tier_repo: Path) -> None:
    async def main() -> dict[str, object]:
        backend = EmbeddedBackend(repo_settings(tier_repo))
        await backend.start()
        try:
            models = await backend.models()
            assert set(models) == {TIER_MODEL, f"{TIER_MODEL}_bf16", f"{TIER_MODEL}_int8"}
            outs = {n: await backend.infer(n, {"image": _pixels()}) for n in models}
            for out in outs.values():
                assert out["logits"].shape == (2, 20, 12, 16)
            return dict(backend._sessions)
        finally:
            await backend.close()

    sessions = asyncio.run(main())
    assert isinstance(sessions[TIER_MODEL], OrtSession)
    assert isinstance(sessions[f"{TIER_MODEL}_bf16"], OpenVINOSession)
    int8 = ModelMetadata.from_json((tier_repo / f"{TIER_MODEL}_int8" / "hrnet.json").read_text())
    assert sessions[f"{TIER_MODEL}_int8"].engine == int8.precision.engine


def test_a_cancelled_openvino_run_is_stopped(tier_repo: Path) -> None:
    session = OpenVINOSession(tier_repo / f"{TIER_MODEL}_bf16" / "1" / "model.onnx", "bf16",
                              threads=1)
    handle = session.begin()
    handle.start_async({"image": _pixels(512, 512, 4)})
    session.cancel(handle)
    with pytest.raises(Exception):  # OpenVINO raises on the wait of a cancelled request
        handle.wait()


def test_registry_default_stays_fp32_and_lists_tiers(tier_repo: Path) -> None:
    metas = {p.name: ModelMetadata.from_json((p / "hrnet.json").read_text())
             for p in tier_repo.iterdir() if (p / "hrnet.json").is_file()}
    # Even when a tier sorts first by name, the FP32 entry is the default.
    renamed = {("a_" + n if n != TIER_MODEL else n): m for n, m in metas.items()}
    registry = ModelRegistry(renamed, repo_settings(tier_repo))
    assert registry.defaults["segmentation"] == TIER_MODEL
    registry = ModelRegistry(metas, repo_settings(tier_repo))
    tiers = [m.precision.precision for m in registry.tiers(f"{TIER_MODEL}_int8")]
    assert tiers == ["fp32", "bf16", "int8"]
    assert [m.name for m in registry.tiers(TIER_MODEL)] == [
        TIER_MODEL, f"{TIER_MODEL}_bf16", f"{TIER_MODEL}_int8"]


def test_the_precision_served_is_the_precision_that_runs(tier_repo: Path) -> None:
    """An FP32 graph run through TensorRT in FP16 (ONNX Runtime's provider in the gateway, or
    Triton's accelerator from --tensorrt-accelerator fp16) answers as fp16; tiers keep theirs."""
    from service.runtime.backends.embedded import served_precision
    from service.runtime.backends.triton import _precision

    fp32 = ModelMetadata.from_json((tier_repo / TIER_MODEL / "hrnet.json").read_text())
    int8 = ModelMetadata.from_json((tier_repo / f"{TIER_MODEL}_int8" / "hrnet.json").read_text())
    trt = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    on = repo_settings(tier_repo, ort_tensorrt_fp16=True)
    assert served_precision(fp32, trt, on) == "fp16"
    assert served_precision(fp32, trt, repo_settings(tier_repo)) == "fp32"
    assert served_precision(fp32, ["CPUExecutionProvider"], on) == "fp32"
    assert served_precision(int8, ["CPUExecutionProvider"], on) == "int8"
    assert fp32.running_at("fp16").precision.precision == "fp16" and fp32.running_at("fp32") is fp32
    accel = {"optimization": {"execution_accelerators": {"gpu_execution_accelerator": [
        {"name": "tensorrt", "parameters": {"precision_mode": "FP16"}}]}}}
    assert _precision(accel, fp32) == "fp16" and _precision({}, fp32) == "fp32"
    assert _precision(accel, int8) == "int8"
