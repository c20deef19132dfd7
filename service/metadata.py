"""The contract between ``model_export`` (which writes it) and the gateway (which reads it).

Every model repository entry carries one :class:`ModelMetadata` document, both as the sidecar file
``<entry>/hrnet.json`` and as the string parameter ``hrnet_metadata`` of ``config.pbtxt`` (so the
gateway can discover a model from a directory or from Triton's model-config API alike).

Tensor conventions shared by every exported graph (see README, "Exported graph"):

* input ``image``: FP32, NCHW, RGB, *pixel units* (0..255, not normalised). The graph applies
  ``(x / 255 - mean) / std`` itself. Pixels that the official code pads with ``-mean/std`` (after
  normalisation) are therefore padded with 0 here.
* segmentation output ``logits``: FP32, ``[N, classes, ceil(ceil(H/2)/2), ceil(ceil(W/2)/2)]``, raw
  logits at 1/4 of the input resolution, exactly what the official network returns.
* landmark output ``heatmaps``: FP32, ``[N, landmarks, 64, 64]`` for a 256x256 input.
* detection: a second input ``image_size`` INT64 ``[N, 2]`` (valid h, w before the bottom/right
  padding to a multiple of 32; boxes are clipped to it) and outputs ``boxes`` FP32 ``[N, K, 4]``
  (network-input pixels), ``scores`` FP32 ``[N, K]``, ``labels`` INT64 ``[N, K]`` (indices into
  ``labels``; 0 is the background and never emitted). Detection normalisation is in pixel units
  (``pixel_scale`` 1.0), as in mmdetection.

This module must stay free of torch: the gateway imports it.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
METADATA_FILENAME = "hrnet.json"
METADATA_PARAMETER = "hrnet_metadata"

Task = Literal["segmentation", "landmarks", "detection"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TensorSpec(_Frozen):
    """One graph input or output as Triton sees it (batch dimension excluded)."""

    name: str
    dtype: Literal["FP32", "FP16", "INT64", "INT32", "UINT8"]
    dims: list[int] = Field(description="Per-item shape; -1 marks a dynamic dimension.")


class Normalization(_Frozen):
    """How pixels become network input. ``mean``/``std`` are on the 0..1 scale, RGB order."""

    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    pixel_scale: float = Field(255.0, description="Pixels are divided by this before mean/std.")
    in_graph: bool = Field(True, description="True: the graph normalises; feed raw pixels.")
    channel_order: Literal["RGB"] = "RGB"


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
    output_stride: int = 4


class LandmarkProtocol(_Frozen):
    """Face crop and heatmap decoding parameters (reference README, facial landmarks)."""

    input_size: tuple[int, int] = (256, 256)
    heatmap_size: tuple[int, int] = (64, 64)
    box_enlarge: float = Field(1.25, description="Loaders multiply the annotated scale by this.")
    scale_unit: float = Field(200.0, description="scale * scale_unit pixels = side of the square crop.")
    flip: bool = Field(False, description="Official test uses no flip.")
    nme_normalization: Literal["inter_ocular", "box"] = "inter_ocular"
    inter_ocular: tuple[int, int] | None = Field(
        None, description="0-based indices of the outer eye corners used for NME."
    )


class DetectionProtocol(_Frozen):
    """Detection test settings (reference README, detection)."""

    max_size: tuple[int, int] = Field((1333, 800), description="(long, short) limits of the resize.")
    size_divisor: int = 32
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    box_convention: Literal["legacy_plus_one", "continuous"] = "legacy_plus_one"
    boxes_in: Literal["network_input", "original"] = Field(
        "network_input", description="Coordinate frame of the graph's box output."
    )


class WeightsInfo(_Frozen):
    """Where the weights came from. ``random_init`` models must say so to every client."""

    random_init: bool
    origin: Literal["official", "mmseg", "mmpose", "mmdet", "mmdet-legacy", "random-init", "torch"]
    format: str = Field(description="Detected checkpoint format, e.g. 'official-seg'.")
    file: str | None = None
    sha256: str | None = None


class ExportInfo(_Frozen):
    """Versions and settings of the export run."""

    model_export_version: str
    torch: str
    onnx: str
    onnxruntime: str | None = None
    opset: int
    exported_at: str
    fp16_tensorrt_accelerator: bool = False


class ModelMetadata(_Frozen):
    """Everything the gateway needs to serve one repository entry."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=())

    schema_version: int = SCHEMA_VERSION
    name: str
    task: Task
    arch: str = Field(description="Registry name, e.g. 'hrnetv2_w48', 'hrnetv2_w18_small_v1'.")
    dataset: str = Field(description="e.g. 'cityscapes', 'pascal_context_59', 'lip', '300w'.")
    labels: list[str] = Field(description="Class names (segmentation/detection) or landmark names.")
    palette: list[tuple[int, int, int]] | None = None
    label_ids: list[int] | None = Field(None, description="Cityscapes train id -> label id.")
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
    segmentation: SegmentationProtocol | None = None
    landmarks: LandmarkProtocol | None = None
    detection: DetectionProtocol | None = None
    weights: WeightsInfo
    export: ExportInfo
    notes: list[str] = Field(
        default_factory=list,
        description="Human-readable remarks, e.g. where a demo entry departs from the official "
        "protocol (reduced base size) or that its weights are random.",
    )

    def to_json(self) -> str:
        """Compact JSON, as stored in ``config.pbtxt``'s ``hrnet_metadata`` parameter."""
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str) -> "ModelMetadata":
        """Parse and validate a metadata document."""
        return cls.model_validate(json.loads(text))
