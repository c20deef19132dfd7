"""Pydantic models shared by several endpoints: errors, model descriptions, the base64 image
input, and the pieces every task response is built from (model used, encoded images, timings)."""

from __future__ import annotations

import io
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from service.encode import b64, png_bytes
from service.contract import (
    DetectionMetadata, LandmarkMetadata, ModelMetadata, SegmentationMetadata, TensorSpec,
)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. 'payload_too_large'.")
    message: str


class ErrorResponse(BaseModel):
    """Body of every non-2xx response."""

    error: ErrorDetail


class ImageInput(BaseModel):
    """JSON request carrying the image as base64 (standard or URL-safe alphabet; data URLs allowed)."""

    image: str = Field(description="Base64-encoded image file (JPEG, PNG, WebP, BMP, TIFF).")


COORDINATE_FRAME = "pixels; the top-left pixel covers [0,1]x[0,1] (its centre is 0.5,0.5)"
"""The frame of every coordinate a task answers (boxes, landmarks, crop squares)."""

TimingsMs = Annotated[
    dict[str, float],
    Field(default_factory=dict, description="Wall-clock milliseconds per stage (decode, preprocess, "
          "queue, inference, postprocess, encode) of this request."),
]


class ModelUsed(BaseModel):
    """The model that answered a request."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    arch: str
    dataset: str
    random_init: bool
    weights_origin: str

    @classmethod
    def of(cls, meta: ModelMetadata) -> "ModelUsed":
        """The block describing ``meta``."""
        return cls(name=meta.name, arch=meta.arch, dataset=meta.dataset,
                   random_init=meta.weights.random_init, weights_origin=meta.weights.origin)


class EncodedImage(BaseModel):
    """An image file inside a JSON response."""

    format: Literal["png", "jpeg"]
    data: str = Field(description="Base64 of the file.")

    @classmethod
    def of(cls, fmt: Literal["png", "jpeg"], data: bytes) -> "EncodedImage":
        """Wrap already encoded file bytes."""
        return cls(format=fmt, data=b64(data))

    @classmethod
    def from_pil(cls, image: Image.Image, fmt: Literal["png", "jpeg"], *, quality: int = 90
                 ) -> "EncodedImage":
        """Encode a Pillow image as PNG (fast compression) or JPEG."""
        if fmt == "png":
            return cls.of(fmt, png_bytes(image))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        return cls.of(fmt, buf.getvalue())


class TaskResult(BaseModel):
    """The head of every task answer (segmentation, landmarks, detection): the model used, the
    loud random-weights flag and the decoded image's size."""

    model_config = ConfigDict(protected_namespaces=())

    model: ModelUsed
    random_init: bool = Field(description="True: random weights; the results are meaningless.")
    image_size: list[int] = Field(description="[width, height] after EXIF orientation.")

    @staticmethod
    def head(meta: ModelMetadata, width: int, height: int) -> dict[str, Any]:
        """The head fields' values for ``meta`` and an image of ``width`` x ``height``."""
        return {"model": ModelUsed.of(meta), "random_init": meta.weights.random_init,
                "image_size": [width, height]}


class ImageResult(TaskResult):
    """The head of every answer with coordinates in the image (landmarks, detection); maps
    (segmentation) are pixel grids of ``image_size`` and carry no frame."""

    coordinate_frame: str = COORDINATE_FRAME


class WeightsSummary(BaseModel):
    origin: str
    format: str
    random_init: bool = Field(
        description="True: the network has random weights (a demo/test export); outputs are meaningless."
    )
    file: str | None = None
    sha256: str | None = None


class InputConventions(BaseModel):
    """How the exported graph expects its input."""

    tensor: str
    dtype: str
    layout: str = "NCHW"
    channel_order: str = "RGB"
    value_range: str = "0..255 (normalised inside the graph)"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    align_corners: bool


class ModelInfo(BaseModel):
    """A served model as clients see it."""

    name: str
    task: str
    arch: str
    dataset: str
    labels: list[str]
    num_labels: int
    input: InputConventions = Field(description="Conventions of the image input (the first input).")
    inputs: list[TensorSpec] = Field(
        description="Every graph input in order (per-item dims: the batch dimension is excluded)."
    )
    outputs: list[TensorSpec] = Field(description="Every graph output in order (per-item dims).")
    max_batch_size: int
    default_options: dict[str, Any] = Field(description="Test-time options used when a request omits them.")
    protocol: dict[str, Any] | None = Field(None, description="The task's full protocol parameters.")
    weights: WeightsSummary
    random_init: bool = Field(description="Loud copy of weights.random_init.")
    default_for_task: bool = False

    @classmethod
    def from_metadata(cls, meta: ModelMetadata, *, is_default: bool = False) -> "ModelInfo":
        """Describe ``meta`` for clients."""
        defaults: dict[str, Any] = {}
        if isinstance(meta, SegmentationMetadata):
            s = meta.segmentation
            defaults = {
                "scales": list(s.scales), "flip": s.flip, "window": s.window,
                "base_size": s.base_size, "crop_size": list(s.crop_size),
                "multi_scales": list(s.multi_scales), "resize_to_square": s.resize_to_square,
            }
        elif isinstance(meta, LandmarkMetadata):
            defaults = {"flip": meta.landmarks.flip, "box_enlarge": meta.landmarks.box_enlarge}
        elif isinstance(meta, DetectionMetadata):
            d = meta.detection
            defaults = {"score_threshold": d.score_threshold, "nms_iou": d.nms_iou,
                        "max_detections": d.max_detections}
        spec = meta.inputs[0]
        return cls(
            name=meta.name, task=meta.task, arch=meta.arch, dataset=meta.dataset,
            labels=list(meta.labels), num_labels=len(meta.labels),
            input=InputConventions(
                tensor=spec.name, dtype=spec.dtype, mean=meta.normalization.mean,
                std=meta.normalization.std, align_corners=meta.align_corners,
            ),
            inputs=list(meta.inputs), outputs=list(meta.outputs),
            max_batch_size=meta.max_batch_size, default_options=defaults,
            protocol=meta.protocol.model_dump(mode="json"),
            weights=WeightsSummary(**meta.weights.model_dump(include={"origin", "format", "random_init", "file", "sha256"})),
            random_init=meta.weights.random_init, default_for_task=is_default,
        )


class ModelList(BaseModel):
    models: list[ModelInfo]
