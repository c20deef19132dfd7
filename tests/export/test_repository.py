"""Repository entries (ONNX and TensorRT plans): config.pbtxt parses as Triton's ModelConfig, metadata
round-trips, TensorRT profiles."""

from __future__ import annotations

import json

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from model_export.metadata import build_metadata
from model_export.tensorrt import (
    TensorRTUnavailable,
    TrtProfile,
    build_plan,
    compute_profile,
    tensorrt_available,
)
from model_export.repository import (
    TritonOptions,
    build_model_config,
    config_to_text,
    metadata_from_config,
    read_config,
    read_metadata,
    write_config,
)
from service.contract import ExportInfo, ModelMetadata, WeightsInfo
from tests.conftest import FACE_300W, SEG_CITYSCAPES, SEG_LIP, SEG_PASCAL


def _meta(dataset: str = "cityscapes", task: str = "segmentation", **kw) -> ModelMetadata:
    return build_metadata(
        name=f"m_{dataset}", task=task, arch="hrnetv2_w18", dataset=dataset,
        weights=WeightsInfo(random_init=True, origin="random-init", format="random-init"),
        export=ExportInfo(model_export_version="0", torch="t", onnx="o", opset=18, exported_at="now"),
        max_batch_size=kw.pop("max_batch_size", 8), **kw,
    )


def test_exported_segmentation_config(model_repo) -> None:
    cfg = read_config(model_repo / SEG_CITYSCAPES / "config.pbtxt")
    assert isinstance(cfg, mc.ModelConfig)
    assert cfg.name == SEG_CITYSCAPES and cfg.platform == "onnxruntime_onnx"
    assert cfg.max_batch_size == 4
    (inp,) = cfg.input
    (out,) = cfg.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("image", mc.TYPE_FP32, [3, -1, -1])
    assert (out.name, out.data_type, list(out.dims)) == ("logits", mc.TYPE_FP32, [19, -1, -1])
    assert list(cfg.dynamic_batching.preferred_batch_size) == [2, 4]
    assert cfg.dynamic_batching.max_queue_delay_microseconds > 0
    assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert (model_repo / SEG_CITYSCAPES / "1" / "model.onnx").is_file()


def test_exported_landmark_config(model_repo) -> None:
    cfg = read_config(model_repo / FACE_300W)
    assert list(cfg.input[0].dims) == [3, 256, 256]
    assert (cfg.output[0].name, list(cfg.output[0].dims)) == ("heatmaps", [68, 64, 64])


@pytest.mark.parametrize("name", [SEG_CITYSCAPES, SEG_PASCAL, SEG_LIP, FACE_300W])
def test_metadata_in_config_and_sidecar_agree(model_repo, model_metadata, name) -> None:
    entry = model_repo / name
    from_config = metadata_from_config(read_config(entry))
    from_json = read_metadata(entry)
    assert from_config == from_json == model_metadata[name]
    assert ModelMetadata.from_json(from_json.to_json()) == from_json
    assert from_json.weights.random_init is True and from_json.weights.origin == "random-init"
    # hrnet.json is pretty-printed for people; the config holds the compact form.
    assert "\n  " in (entry / "hrnet.json").read_text()


def test_fixture_protocols(model_metadata) -> None:
    cs = model_metadata[SEG_CITYSCAPES].segmentation
    assert (cs.base_size, tuple(cs.crop_size), cs.window) == (256, (128, 256), "cityscapes")
    pc = model_metadata[SEG_PASCAL].segmentation
    assert (pc.base_size, tuple(pc.crop_size), pc.window) == (160, (128, 128), "base")
    lip = model_metadata[SEG_LIP]
    assert lip.segmentation.resize_to_square == 96 and lip.flip_pairs == [(14, 15), (16, 17), (18, 19)]
    assert model_metadata[FACE_300W].landmarks.inter_ocular == (36, 45)


def test_gpu_config_with_tensorrt_accelerator_and_warmup(tmp_path) -> None:
    meta = _meta(base_size=1024, crop_size=(512, 1024))
    cfg = build_model_config(meta, TritonOptions(tensorrt_fp16=True, warmup="random"))
    path = write_config(tmp_path / meta.name, cfg)
    parsed = read_config(path)
    assert parsed == cfg
    assert parsed.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    (acc,) = parsed.optimization.execution_accelerators.gpu_execution_accelerator
    assert acc.name == "tensorrt" and acc.parameters["precision_mode"] == "FP16"
    (warm,) = parsed.model_warmup
    sample = warm.inputs["image"]
    assert warm.batch_size == 1 and list(sample.dims) == [3, 512, 1024] and sample.random_data
    text = config_to_text(parsed)
    assert 'key: "hrnet_metadata"' in text and 'platform: "onnxruntime_onnx"' in text
    assert json.loads(parsed.parameters["hrnet_metadata"].string_value)["name"] == meta.name


def test_tensorrt_accelerator_requires_gpu_instances() -> None:
    with pytest.raises(ValueError, match="gpu"):
        build_model_config(_meta(), TritonOptions(instance_kind="cpu", tensorrt_fp16=True))


def test_config_can_be_rewritten_for_another_backend(tmp_path, model_repo) -> None:
    cfg = read_config(model_repo / SEG_PASCAL)
    cfg.ClearField("platform")
    cfg.backend = "python"
    cfg.ClearField("model_warmup")
    write_config(tmp_path / "variant", cfg)
    again = read_config(tmp_path / "variant")
    assert again.backend == "python" and not again.platform
    assert metadata_from_config(again).name == SEG_PASCAL


def test_profiles() -> None:
    cs = compute_profile(_meta("cityscapes"))
    assert cs.min_shape == (1, 3, 32, 32)
    assert cs.opt_shape == (4, 3, 1024, 2048)
    assert cs.max_shape == (8, 3, 2048, 2048)
    capped = compute_profile(_meta("cityscapes"), max_hw=(512, 512))  # below the 1024x2048 crop
    assert capped.max_shape[2:] == (1024, 2048)  # the crop-sized warm-up sample still fits
    pc = compute_profile(_meta("pascal_context_59"))
    assert pc.min_shape[2:] == pc.opt_shape[2:] == pc.max_shape[2:] == (520, 520)
    lip = compute_profile(_meta("lip", base_size=96), opt_batch=2)
    assert lip.opt_shape == (2, 3, 96, 96) and lip.max_shape == (8, 3, 96, 96)
    face = compute_profile(_meta("300w", task="landmarks", max_batch_size=16))
    assert face.min_shape == (1, 3, 256, 256) and face.max_shape == (16, 3, 256, 256)
    with pytest.raises(ValueError):
        TrtProfile("image", (1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 64, 64))


@pytest.mark.skipif(tensorrt_available(), reason="checks the message shown where tensorrt is missing")
def test_build_plan_without_tensorrt_says_why(tmp_path) -> None:
    with pytest.raises(TensorRTUnavailable, match="tensorrt"):
        build_plan(tmp_path / "x.onnx", tmp_path / "x.plan", compute_profile(_meta()))


class _FakeTensorRT:
    """The slice of TensorRT 10's Python API that ``build_plan`` uses, recording every call.

    Its builder drives the config's progress monitor through two phases (one nested), as
    TensorRT 10 does, and serialises the graph it parsed as the "plan": a plan runner in the
    tests (ONNX Runtime on those bytes) then runs exactly what was built.
    """

    __version__ = "10.3.0"

    def __init__(self) -> None:
        import types

        self.calls: dict[str, object] = {}
        fake = self

        class Logger:
            WARNING = "warning"

            def __init__(self, severity: str) -> None:
                pass

        class IProgressMonitor:
            """TensorRT 10's abstract monitor (pybind11 trampoline: __init__ must be called)."""

            def __init__(self) -> None:
                self._initialised = True

        class Profile:
            def set_shape(self, name, lo, mid, hi) -> None:
                fake.calls["set_shape"] = (name, tuple(lo), tuple(mid), tuple(hi))

        class Config:
            progress_monitor = None

            def set_memory_pool_limit(self, pool, size) -> None:
                fake.calls["pool"] = (pool, size)

            def set_flag(self, flag) -> None:
                fake.calls.setdefault("flags", []).append(flag)

            def clear_flag(self, flag) -> None:
                fake.calls.setdefault("cleared", []).append(flag)

            def add_optimization_profile(self, profile) -> None:
                fake.calls["profile_added"] = True

        class Builder:
            platform_has_fast_fp16 = True

            def __init__(self, logger) -> None:
                pass

            def create_network(self, flags: int = 0) -> object:
                fake.calls["network_flags"] = flags
                return types.SimpleNamespace()

            def create_builder_config(self) -> Config:
                return Config()

            def create_optimization_profile(self) -> Profile:
                return Profile()

            def build_serialized_network(self, network, config) -> bytes:
                monitor = config.progress_monitor
                if monitor is not None:
                    assert getattr(monitor, "_initialised", False)
                    fake.calls.setdefault("monitored", []).append(True)
                    monitor.phase_start("Building engine", None, 3)
                    monitor.phase_start("Tactic timing", "Building engine", 2)
                    for step in range(2):
                        assert monitor.step_complete("Tactic timing", step) is True
                    monitor.phase_finish("Tactic timing")
                    for step in range(3):
                        assert monitor.step_complete("Building engine", step) is True
                    monitor.phase_finish("Building engine")
                return network.onnx

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger) -> None:
                self.network = network

            def parse(self, data: bytes) -> bool:
                fake.calls.setdefault("parsed", []).append(data)
                self.network.onnx = data
                return True

        self.Logger, self.Builder, self.OnnxParser = Logger, Builder, OnnxParser
        self.IProgressMonitor = IProgressMonitor
        # TensorRT 10 keeps EXPLICIT_BATCH only as a deprecated, ignored member.
        self.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0,
                                                                   STRONGLY_TYPED=1)
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
        self.BuilderFlag = types.SimpleNamespace(FP16="fp16", TF32="tf32")


def test_build_plan_with_the_tensorrt10_api(tmp_path, monkeypatch) -> None:
    """FP32 and FP16 plans: the builder flags (FP32 clears TF32), the profile, the workspace,
    and the build's progress printed through TensorRT 10's IProgressMonitor."""
    import sys

    fake = _FakeTensorRT()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    meta = _meta("300w", task="landmarks", max_batch_size=4)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"ONNX")
    lines: list[str] = []
    plan = build_plan(onnx_file, tmp_path / "p16" / "model.plan", compute_profile(meta),
                      fp16=True, workspace_bytes=1 << 20, log=lines.append)
    assert fake.calls["parsed"] == [b"ONNX"] and plan.read_bytes() == b"ONNX"
    assert fake.calls["network_flags"] == 0  # no deprecated EXPLICIT_BATCH on TensorRT 10
    assert fake.calls["set_shape"] == ("image", (1, 3, 256, 256), (2, 3, 256, 256),
                                       (4, 3, 256, 256))
    assert fake.calls["pool"] == ("workspace", 1 << 20) and fake.calls["flags"] == ["fp16"]
    assert "cleared" not in fake.calls
    text = "\n".join(lines)
    assert "building the FP16 engine" in text
    assert "TensorRT: Building engine (3 steps)" in text
    assert "step 3/3" in text and "Building engine done in" in text
    assert "  TensorRT: Tactic timing (2 steps)" in text  # nested phase, indented
    assert "FP16 plan of" in lines[-1]
    build_plan(onnx_file, tmp_path / "p32" / "model.plan", compute_profile(meta), fp16=False,
               log=lines.append)
    assert fake.calls["flags"] == ["fp16"] and fake.calls["cleared"] == ["tf32"]
    assert fake.calls["monitored"] == [True, True]
    assert "FP32 plan of" in lines[-1]


def test_build_plan_without_a_progress_monitor_logs_stages(tmp_path, monkeypatch) -> None:
    import sys

    fake = _FakeTensorRT()
    del fake.IProgressMonitor  # TensorRT < 10
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    (tmp_path / "m.onnx").write_bytes(b"ONNX")
    lines: list[str] = []
    build_plan(tmp_path / "m.onnx", tmp_path / "m.plan", compute_profile(_meta()), log=lines.append)
    assert "monitored" not in fake.calls
    assert any("no progress monitor" in line for line in lines) and "plan of" in lines[-1]
