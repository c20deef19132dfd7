"""Precision tiers at export: tier selection (engine by measurement), the deltas stored in the
metadata and parity.json, the threshold that fails an export (exit 3, nothing written), the
per-task figures, and the TensorRT FP16/INT8 plans against a fake of TensorRT 10's API.

Random weights have tiny logit margins (near-ties between classes and heatmap peaks), so their
agreement with FP32 is far below a trained model's: these tests check what is measured and
recorded, never that random weights agree well.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_export.errors import ExportError
from model_export.precision.build import build_cpu_tiers, build_tensorrt_tiers, candidates
from model_export.precision.deltas import detection_deltas, landmark_deltas, segmentation_deltas
from model_export.precision.images import CALIBRATION_PHOTOS, task_feeds
from model_export.precision.tiers import PrecisionOptions, TierThresholds, tier_name
from model_export.repository import read_config, read_metadata
from service.contract import ModelMetadata, TierDeltas
from tests.conftest import FACE_300W, TIER_MODEL


def test_tier_entries_are_written_beside_fp32(tier_export, tier_repo: Path) -> None:
    names = {p.name for p in tier_repo.iterdir() if (p / "hrnet.json").is_file()}
    assert names == {TIER_MODEL, f"{TIER_MODEL}_bf16", f"{TIER_MODEL}_int8"}
    fp32 = read_metadata(tier_repo / TIER_MODEL)
    assert (fp32.precision.precision, fp32.precision.engine) == ("fp32", "onnxruntime")
    assert fp32.precision.base_model is None and fp32.precision.deltas is None
    bf16 = read_metadata(tier_repo / f"{TIER_MODEL}_bf16")
    assert (bf16.precision.precision, bf16.precision.engine) == ("bf16", "openvino")
    # BF16 runs the FP32 graph itself with OpenVINO's BF16 hint.
    assert ((tier_repo / f"{TIER_MODEL}_bf16/1/model.onnx").read_bytes()
            == (tier_repo / f"{TIER_MODEL}/1/model.onnx").read_bytes())
    int8 = read_metadata(tier_repo / f"{TIER_MODEL}_int8")
    assert int8.precision.precision == "int8" and int8.precision.base_model == TIER_MODEL
    assert "scikit-image sample photos" in int8.precision.calibration
    # Same contract: tensor specs stay FP32, the protocol is the FP32 entry's.
    for tier in (bf16, int8):
        assert tier.inputs == fp32.inputs and tier.outputs == fp32.outputs
        assert tier.segmentation == fp32.segmentation and tier.labels == fp32.labels


def test_int8_graph_is_quantised(tier_repo: Path) -> None:
    import onnx

    ops = {n.op_type for n in onnx.load(str(tier_repo / f"{TIER_MODEL}_int8/1/model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops


def test_engine_is_the_fastest_measured(tier_repo: Path) -> None:
    """Tier selection: every engine that can run the tier was measured; the entry runs the
    fastest (no thresholds set), and BF16 never runs on ONNX Runtime (no BF16 convolutions)."""
    for tier in ("bf16", "int8"):
        report = json.loads((tier_repo / f"{TIER_MODEL}_{tier}/parity.json").read_text())["tier"]
        meta = read_metadata(tier_repo / f"{TIER_MODEL}_{tier}")
        tried = report["candidates"]
        assert report["engine"] == meta.precision.engine
        assert report["engine"] == min(tried, key=lambda e: tried[e]["ms_per_pass"])
        if tier == "bf16":
            assert set(tried) == {"openvino"} and "onnxruntime" in report["not_candidates"]
        else:
            assert set(tried) == {"onnxruntime", "openvino"}
        assert report["passed"] and report["failures"] == []


def test_deltas_are_stored_in_metadata_and_parity(tier_repo: Path) -> None:
    fp32_parity = json.loads((tier_repo / TIER_MODEL / "parity.json").read_text())
    assert set(fp32_parity["tiers"]) == {f"{TIER_MODEL}_bf16", f"{TIER_MODEL}_int8"}
    for tier in ("bf16", "int8"):
        name = f"{TIER_MODEL}_{tier}"
        meta = read_metadata(tier_repo / name)
        d = meta.precision.deltas
        assert d is not None and d.reference == "fp32 onnxruntime"
        assert d.images == 3 and d.sources == ["parity photos (astronaut, coffee, chelsea)"]
        assert d.sizes == [(64, 128), (50, 75)]
        assert 0.0 < d.min_label_agreement <= d.label_agreement < 1.0  # random weights
        assert d.class_agreement and all(0.0 <= v <= 1.0 for v in d.class_agreement.values())
        assert set(d.class_agreement) <= set(meta.labels)
        assert d.ms_per_pass > 0 and d.fp32_ms_per_pass > 0
        assert d.nme is None and d.box_agreement is None  # another task's figures
        stored = fp32_parity["tiers"][name]["deltas"]
        assert stored == json.loads(d.model_dump_json())
        report = json.loads((tier_repo / name / "parity.json").read_text())
        assert report["passed"] and report["tier"]["inputs"][0] == "astronaut@64x128"
        # The config carries the same metadata as hrnet.json.
        cfg = read_config(tier_repo / name)
        assert ModelMetadata.from_json(cfg.parameters["hrnet_metadata"].string_value) == meta
        assert "measured against FP32" in meta.notes[-1]


def test_config_per_engine(tier_repo: Path) -> None:
    """Production Triton: OpenVINO tiers on Triton's OpenVINO backend (model.onnx, BF16 hint),
    ONNX Runtime tiers on its ONNX Runtime backend; CPU instances either way."""
    from tritonclient.grpc import model_config_pb2 as mc

    bf16 = read_config(tier_repo / f"{TIER_MODEL}_bf16")
    assert (bf16.backend, bf16.platform, bf16.default_model_filename) == ("openvino", "", "model.onnx")
    assert bf16.parameters["HINT_BF16"].string_value == "YES"
    assert bf16.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    fp32 = read_config(tier_repo / TIER_MODEL)
    assert (fp32.backend, fp32.platform) == ("onnxruntime", "onnxruntime_onnx")
    assert "HINT_BF16" not in fp32.parameters


def test_threshold_failure_fails_the_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    """A real export (CLI) whose INT8 tier misses --min-label-agreement exits 3 and writes no
    entry (FP32 included). Random weights agree far below 0.9999 (tiny logit margins)."""
    from model_export.cli import EXIT_PARITY, main

    repo = tmp_path / "repo"
    code = main(["export", "--task", "segmentation", "--arch", "hrnetv2_w18_small_v1",
                 "--dataset", "lip", "--random-init", "--name", "thr", "--repo", str(repo),
                 "--base-size", "64", "--trace-size", "64x64", "--parity-sizes", "48x48",
                 "40x56", "--parity-batches", "1", "--max-batch-size", "2", "--warmup", "none",
                 "--instance-kind", "cpu", "--precision", "fp32", "int8",
                 "--engine", "onnxruntime", "--calibration-count", "1",
                 "--min-label-agreement", "0.9999"])
    err = capsys.readouterr().err
    assert code == EXIT_PARITY, err
    assert "thr_int8" in err and "label agreement" in err and "< 0.9999" in err
    assert not repo.exists() or not any(repo.iterdir())
    _remove_kept_export(err)


def test_thresholds_check_each_figure() -> None:
    d = TierDeltas(images=1, sources=[], label_agreement=0.98, min_label_agreement=0.9,
                   class_agreement={"road": 0.99, "sky": 0.7}, nme=0.02,
                   max_displacement_px=3.0, box_agreement=0.9)
    assert TierThresholds().failures(d) == [] and not TierThresholds().any()
    assert TierThresholds(min_label_agreement=0.97, max_nme=0.05).failures(d) == []
    fails = TierThresholds(min_label_agreement=0.99, min_class_agreement=0.8, max_nme=0.01,
                           max_displacement_px=2.0, min_box_agreement=0.95).failures(d)
    assert len(fails) == 5 and "class agreement (sky)" in fails[1]


def test_options_are_validated() -> None:
    with pytest.raises(ExportError, match="GPU tier"):
        PrecisionOptions(tiers=("fp16",)).validate("segmentation")
    with pytest.raises(ExportError, match="TensorRT precision"):
        PrecisionOptions(tensorrt=("bf16",)).validate("segmentation")
    with pytest.raises(ExportError, match="detection"):
        PrecisionOptions(tensorrt=("int8",)).validate("detection")
    with pytest.raises(ExportError, match="not face_detection"):
        PrecisionOptions(tiers=("int8",)).validate("face_detection")
    PrecisionOptions().validate("face_detection")  # FP32 alone: fine
    with pytest.raises(ExportError, match="cannot run bf16"):
        candidates("bf16", "onnxruntime")
    assert candidates("int8", "auto")[0] == ["onnxruntime", "openvino"]
    assert tier_name("m", "fp32") == "m" and tier_name("m", "int8") == "m_int8"
    assert tier_name("m", "fp16", tensorrt=True) == "m_trt"
    assert tier_name("m", "int8", tensorrt=True) == "m_trt_int8"
    assert not set(CALIBRATION_PHOTOS) & {"astronaut", "coffee", "chelsea"}


def test_landmark_tier_measures_displacement_and_nme(model_repo: Path, tmp_path: Path) -> None:
    """A landmark tier (BF16: no quantisation, which the segmentation tiers cover, to keep the
    full W18 face model quick here) is measured in crop pixels and NME."""
    meta = read_metadata(model_repo / FACE_300W)
    popts = PrecisionOptions(tiers=("bf16",))
    (build,) = build_cpu_tiers("landmarks", model_repo / FACE_300W / "1" / "model.onnx", tmp_path,
                               meta, popts, [], lambda _m: None, threads=1)
    d = build.metadata.precision.deltas
    assert build.name == f"{FACE_300W}_bf16" and build.engine == "openvino"
    assert d.sizes == [] and d.images == 3
    assert 0.0 <= d.mean_displacement_px <= d.max_displacement_px <= 256 * 2 ** 0.5
    assert d.nme is not None and d.nme >= 0 and d.label_agreement is None
    assert build.model_file.is_file() and build.failures == []


def test_segmentation_figures() -> None:
    ref = np.zeros((1, 3, 2, 4), np.float32)
    ref[0, 0, :, :2] = 1  # class 0 left, class 1 right
    ref[0, 1, :, 2:] = 1
    got = ref.copy()
    got[0, 2, 0, 3] = 5  # one pixel of class 1 becomes class 2
    d = segmentation_deltas([{"logits": ref}], [{"logits": got}], ["a", "b", "c"])
    assert d["label_agreement"] == d["min_label_agreement"] == 7 / 8
    assert d["class_agreement"] == {"a": 1.0, "b": 0.75}  # only classes FP32 predicts


def test_landmark_figures() -> None:
    ref = np.zeros((1, 4, 64, 64), np.float32)
    for k, (x, y) in enumerate([(10, 20), (50, 20), (30, 40), (30, 50)]):
        ref[0, k, y, x] = 1
    got = ref.copy()
    got[0, 3] = 0
    got[0, 3, 50, 32] = 1  # landmark 3 two heatmap pixels (8 crop pixels) to the right
    d = landmark_deltas([{"heatmaps": ref}], [{"heatmaps": got}], inter_ocular=(0, 1))
    assert d["max_displacement_px"] == pytest.approx(8.0)
    assert d["mean_displacement_px"] == pytest.approx(2.0)
    assert d["nme"] == pytest.approx(2.0 / 160.0)  # eyes 40 heatmap px = 160 crop px apart


def test_detection_figures() -> None:
    boxes = np.array([[[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]]], np.float32)
    ref = {"boxes": boxes, "scores": np.array([[0.9, 0.8, 0.7]], np.float32),
           "labels": np.array([[1, 2, 3]])}
    got = {"boxes": boxes[:, :2] + 1, "scores": np.array([[0.85, 0.8]], np.float32),
           "labels": np.array([[1, 2]])}
    d = detection_deltas([ref], [got])
    assert d["box_agreement"] == pytest.approx(2 / 3)
    assert d["max_score_diff"] == pytest.approx(0.05, abs=1e-6)
    assert 0.5 < d["mean_box_iou"] < 1.0


def test_feeds_per_task() -> None:
    img = [("x", np.zeros((40, 60, 3), np.uint8))]
    (label, seg), = task_feeds("segmentation", img, [(16, 32)])
    assert label == "x@16x32" and seg["image"].shape == (1, 3, 16, 32)
    (_, face), = task_feeds("landmarks", img, [(16, 32)])
    assert face["image"].shape == (1, 3, 256, 256)
    (_, det), = task_feeds("detection", img, [(64, 48)])  # scale min(64/60, 48/40): 43x64
    assert det["image"].shape == (1, 3, 64, 64) and det["image_size"].tolist() == [[43, 64]]


# --------------------------------------------------------------------------------------------
# TensorRT FP32 / FP16 / INT8 (no GPU here: TensorRT 10's API is faked by
# tests/export/test_repository.py: _FakeTensorRT, whose "plan" is the graph it parsed; the plan's
# run is ONNX Runtime on those bytes, so the engine check really runs what was built)
# --------------------------------------------------------------------------------------------


def _fake_tensorrt():
    from tests.export.test_repository import _FakeTensorRT

    fake = _FakeTensorRT()
    fake.Builder.platform_has_fast_int8 = True
    fake.BuilderFlag.INT8 = "int8"
    return fake


def _plan_on_ort(noise: float = 0.0):
    """A plan runner: ONNX Runtime on the fake plan (the parsed graph); ``noise`` added to every
    output stands for an engine that computes something else."""
    from model_export.precision.build import ort_runner

    def factory(plan: Path):
        run = ort_runner(plan, 1)
        rng = np.random.default_rng(0)
        if not noise:
            return run
        return lambda feed: {k: v + rng.normal(0, noise, v.shape).astype(v.dtype)
                             for k, v in run(feed).items()}

    return factory


def test_tensorrt_tiers_run_the_built_plan(tier_repo: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """FP32, FP16 and INT8 plans: FP32 without FP16 (TF32 cleared), FP16 from the FP32 graph,
    INT8 from a symmetric Q/DQ graph with the INT8 flag; each plan run on the parity photos and
    checked against the ONNX graph (its own parity report), and measured against FP32."""
    import sys

    import onnx

    fake = _fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    meta = read_metadata(tier_repo / TIER_MODEL)
    onnx_path = tier_repo / TIER_MODEL / "1" / "model.onnx"
    popts = PrecisionOptions(calibration_count=1)
    builds = build_tensorrt_tiers("segmentation", onnx_path, tmp_path, meta, popts,
                                  ("fp32", "fp16", "int8"), lambda _m: None,
                                  plan_runner=_plan_on_ort())
    fp32, fp16, int8 = builds
    assert [b.name for b in builds] == [f"{TIER_MODEL}_trt_fp32", f"{TIER_MODEL}_trt",
                                        f"{TIER_MODEL}_trt_int8"]
    # LIP's 'base' windows: the profile is the 96x96 crop, and the plans are measured there.
    assert fake.calls["set_shape"] == ("image", (1, 3, 96, 96), (2, 3, 96, 96), (4, 3, 96, 96))
    assert fake.calls["flags"] == ["fp16", "fp16", "int8"]  # FP32: none; INT8 with FP16 fallback
    assert fake.calls["cleared"] == ["tf32"]  # only the FP32 plan: no TF32 under the name FP32
    assert fake.calls["parsed"][0] == fake.calls["parsed"][1] == onnx_path.read_bytes()
    qdq = onnx.load_model_from_string(fake.calls["parsed"][2])
    zero_points = [onnx.numpy_helper.to_array(t) for t in qdq.graph.initializer
                   if t.name.endswith("_zero_point")]
    # Symmetric: every zero point 0; activations and weights int8 (biases int32).
    assert zero_points and not any(z.any() for z in zero_points)
    assert {z.dtype for z in zero_points} <= {np.dtype(np.int8), np.dtype(np.int32)}
    assert any(z.dtype == np.int8 for z in zero_points)
    for b in builds:
        assert b.metadata.precision.engine == "tensorrt" and b.tensorrt and not b.failures
        assert b.model_file.read_bytes() == fake.calls["parsed"][builds.index(b)]
        d = b.metadata.precision.deltas
        assert d.sizes == [(96, 96)] and d.label_agreement is not None
        rep = b.parity
        assert rep["kind"] == "tensorrt_plan" and rep["model"] == b.name and rep["measured"]
        assert rep["reference"].startswith(f"the ONNX graph of '{TIER_MODEL}'")
        assert [r["input"] for r in rep["per_input"]] == [
            "astronaut@96x96", "coffee@96x96", "chelsea@96x96"]
        assert rep["max_rel_error"] == d.max_output_rel_error
        assert rep["passed"] and rep["tier"] == b.report
        # Nothing of the ONNX graph's own report against PyTorch is copied in.
        assert not {"cases", "dynamic_size_checked", "trace_size", "onnxruntime"} & set(rep)
    # The stand-in runs the FP32 graph: exact for FP32 and FP16 (FP16 arithmetic itself is not
    # reproduced here), not for the Q/DQ graph.
    for b in (fp32, fp16):
        assert b.parity["max_abs_error"] == 0.0 and b.parity["min_label_agreement"] == 1.0
    assert fp32.parity["thresholds"] == {"max_rel_error": 1e-3, "min_label_agreement": 0.999,
                                         "max_displacement_px": 1.0}
    assert fp16.parity["thresholds"]["max_rel_error"] == 5e-2
    assert int8.parity["max_abs_error"] > 0 and int8.parity["label_agreement"] < 1.0
    assert int8.parity["thresholds"] == {}  # INT8: measured; the tier thresholds apply
    assert "explicit Q/DQ" in int8.metadata.precision.calibration
    assert "checked against the ONNX graph" in fp32.metadata.notes[-1]


def test_a_plan_that_cannot_run_is_not_written(tier_repo: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No CUDA device here: TensorRT's runtime cannot run the plan, so it is not checked, and
    an unchecked plan fails (no entry claims a parity nobody measured)."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    meta = read_metadata(tier_repo / TIER_MODEL)
    (b,) = build_tensorrt_tiers("segmentation", tier_repo / TIER_MODEL / "1" / "model.onnx",
                                tmp_path, meta, PrecisionOptions(), ("fp16",), lambda _m: None)
    assert b.failures and "cannot run here to be checked" in b.failures[0]
    assert b.parity["measured"] is False and b.parity["passed"] is False
    assert b.metadata.precision.deltas is None and "NOT checked" in b.metadata.notes[-1]


def test_plan_check_figures_and_limits() -> None:
    from model_export.precision.plan_check import DEFAULT_PLAN_THRESHOLDS, compare_outputs

    ref = np.zeros((1, 2, 4, 4), np.float32)
    ref[0, 0] = 1.0
    ref[0, 1, 0, 0] = 2.0
    got = ref.copy()
    got[0, 1, 1, 1] = 1.5  # one pixel of 16 changes class
    c = compare_outputs([{"logits": ref}], [{"logits": got}], ["x@4x4"], "segmentation")
    assert c["max_abs_error"] == pytest.approx(1.5) and c["max_rel_error"] == pytest.approx(0.75)
    assert c["label_agreement"] == c["min_label_agreement"] == 15 / 16
    fails = DEFAULT_PLAN_THRESHOLDS["fp32"].failures(c)
    assert len(fails) == 2 and "0.75 > 0.001" in fails[0] and "0.93750 < 0.999" in fails[1]
    assert DEFAULT_PLAN_THRESHOLDS["int8"].failures(c) == []
    nan = got.copy()
    nan[0, 0, 3, 3] = np.nan  # a non-finite output never passes
    assert compare_outputs([{"logits": ref}], [{"logits": nan}], ["x"], "segmentation"
                           )["max_abs_error"] == float("inf")
    heat = np.zeros((1, 1, 64, 64), np.float32)
    heat[0, 0, 10, 10] = 1.0
    moved = np.zeros_like(heat)
    moved[0, 0, 10, 12] = 1.0  # two heatmap pixels: 8 crop pixels
    c = compare_outputs([{"heatmaps": heat}], [{"heatmaps": moved}], ["face"], "landmarks")
    assert c["max_displacement_px"] == pytest.approx(8.0)
    assert "displacement 8.000 px > 4.0" in DEFAULT_PLAN_THRESHOLDS["fp16"].failures(c)[-1]


def _remove_kept_export(message: str) -> None:
    """A failed export keeps its staging folder and names it: check that it holds the failed
    graph and its parity report, then remove it (the suite leaves nothing in /tmp)."""
    import re
    import shutil

    found = re.search(r"kept in (\S+) for inspection", message)
    assert found, message
    kept = Path(found.group(1))
    assert (kept / "model.onnx").is_file() and (kept / "parity.json").is_file()
    shutil.rmtree(kept)


def test_an_export_that_stops_leaves_no_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """An export stopped by anything but a parity failure (here a plan build that raises
    OSError, as a full disk does) removes its staging folder: only a ParityError keeps one."""
    import sys
    import tempfile

    import model_export.tensorrt as trt_module

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def full_disk(plan: Path):
        raise OSError(28, "No space left on device")

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    monkeypatch.setattr(trt_module, "tensorrt_runner", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _plan_export(tmp_path, ("fp32",))
    assert list(scratch.iterdir()) == []
    # A parity failure, by contrast, keeps the folder its message names.
    monkeypatch.setattr(trt_module, "tensorrt_runner", _plan_on_ort(noise=0.5))
    with pytest.raises(Exception, match="kept in") as failed:
        _plan_export(tmp_path, ("fp32",))
    assert [p.name.startswith("model_export_lip_") for p in scratch.iterdir()] == [True]
    _remove_kept_export(str(failed.value))


def _plan_export(tmp_path: Path, tiers: tuple[str, ...], **thresholds):
    from model_export.exporters import SegmentationExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.precision.plan_check import PlanThresholds
    from model_export.repository import TritonOptions

    req = ExportRequest(task="segmentation", arch="hrnetv2_w18_small_v1", dataset="lip",
                        name="lip", repo=tmp_path / "repo", random_init=True,
                        options=SegmentationExport(base_size=64, max_batch_size=2,
                                                   trace_size=(64, 64),
                                                   parity_sizes=[(48, 48), (40, 56)],
                                                   parity_batches=(1,)),
                        triton=TritonOptions(instance_kind="cpu", warmup="none"),
                        precision=PrecisionOptions(tensorrt=tiers,
                                                   plan_thresholds=PlanThresholds(**thresholds)))
    return export_model(req, log=lambda _m: None)


def test_tensorrt_plans_in_an_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline writes FP32 and FP16 plan entries (tensorrt_plan platform, GPU instances)
    whose parity.json is their engine's check against the ONNX graph."""
    import sys

    import model_export.tensorrt as trt_module

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    monkeypatch.setattr(trt_module, "tensorrt_runner", _plan_on_ort())
    result = _plan_export(tmp_path, ("fp32", "fp16"))
    assert [t.name for t in result.tiers] == ["lip_trt_fp32", "lip_trt"]
    assert result.plan_entry is not None and result.plan_entry.entry_dir.name == "lip_trt"
    for entry in result.tier_entries:
        cfg = read_config(entry.entry_dir)
        assert (cfg.platform, cfg.backend) == ("tensorrt_plan", "tensorrt")
        meta = read_metadata(entry.entry_dir)
        assert meta.precision.engine == "tensorrt" and meta.precision.base_model == "lip"
        assert meta.precision.deltas.max_output_rel_error == 0.0
        report = json.loads(entry.parity.read_text())
        assert report["kind"] == "tensorrt_plan" and report["passed"]
        assert report["precision"] == meta.precision.precision
        assert report["per_input"][0]["input"] == "astronaut@64x64"  # base size 64: the crop
        # The ONNX-vs-PyTorch report ("cases") stays the base entry's.
        assert "cases" not in report and report["base_model_parity"].startswith("../lip/")
    base = json.loads((tmp_path / "repo" / "lip" / "parity.json").read_text())
    assert base["tiers"]["lip_trt"]["passed"] and "tensorrt_plan" not in json.dumps(base)


def test_a_plan_that_differs_fails_the_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    """An engine whose outputs differ from the ONNX graph's beyond the FP32 limits: exit 3
    through the CLI's error, nothing written (the ONNX entry included)."""
    import sys

    import model_export.tensorrt as trt_module
    from model_export.errors import ParityError

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt())
    monkeypatch.setattr(trt_module, "tensorrt_runner", _plan_on_ort(noise=0.5))
    with pytest.raises(ParityError, match=r"lip_trt_fp32: max relative output error .* > 0.001"
                       ) as failed:
        _plan_export(tmp_path, ("fp32",))
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").iterdir())
    _remove_kept_export(str(failed.value))
    # The limits are the export's to set: a looser one lets the same engine through.
    result = _plan_export(tmp_path, ("fp32",), max_rel_error=10.0, min_label_agreement=0.0)
    report = json.loads(result.tier_entries[0].parity.read_text())
    assert report["passed"] and report["max_abs_error"] > 0.1
    assert report["thresholds"]["max_rel_error"] == 10.0


def test_cli_flags_make_the_request(tmp_path: Path) -> None:
    from model_export.cli import _request_from_args, build_parser

    args = build_parser().parse_args([
        "export", "--task", "landmarks", "--arch", "hrnetv2_w18", "--dataset", "300w",
        "--random-init", "--name", "f", "--precision", "bf16", "int8", "--tensorrt-precision",
        "int8", "--engine", "openvino", "--calibration-images", str(tmp_path),
        "--calibration-count", "4", "--calibration-size", "128x256", "--precision-images",
        str(tmp_path), "--max-nme", "0.02", "--max-landmark-shift", "3",
        "--plan-max-error", "0.01", "--plan-min-label-agreement", "0.95"])
    req = _request_from_args(args)
    p = req.precision
    assert (p.tiers, p.tensorrt, p.engine) == (("bf16", "int8"), ("int8",), "openvino")
    assert (p.calibration_images, p.calibration_count, p.calibration_size) == (tmp_path, 4, (128, 256))
    assert p.eval_images == tmp_path and req.tensorrt_tiers == ("int8",)
    assert p.thresholds == TierThresholds(max_nme=0.02, max_displacement_px=3.0)
    assert (p.plan_thresholds.max_rel_error, p.plan_thresholds.min_label_agreement) == (0.01, 0.95)
