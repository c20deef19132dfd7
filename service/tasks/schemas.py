"""Pydantic pieces every task builds its request and answer from: the base64 image input, the
answer's head (model used, random_init, image size), encoded images and timings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from service.contract import Engine, ModelMetadata, Precision
from service.imaging.encode import b64, image_bytes


class ImageInput(BaseModel):
    """JSON request carrying the image as base64 (standard or URL-safe alphabet; data URLs
    allowed), or several images (``images``; exactly one of the two)."""

    image: str | None = Field(None, min_length=1, description="Base64-encoded image file (JPEG, "
                              "PNG, WebP, BMP, TIFF); a data URL is accepted too.")
    images: list[str | dict[str, Any]] | None = Field(
        None, min_length=1, description="Several images instead of 'image' (at most max_images): "
        "each a base64 string, or an object with its 'image' and this endpoint's per-image "
        "fields (landmarks: 'faces'). The answer lists the results in order; an image that "
        "fails alone is an error item.")


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
    precision: Precision = Field(
        "fp32", description="The arithmetic that ran: 'fp32' (exact to the official code), or a "
        "lower tier ('bf16', 'int8', 'fp16') whose measured deltas /v1/models lists.")
    engine: Engine = Field("onnxruntime", description="What ran the graph.")

    @classmethod
    def of(cls, meta: ModelMetadata) -> "ModelUsed":
        """The block describing ``meta``."""
        return cls(name=meta.name, arch=meta.arch, dataset=meta.dataset,
                   random_init=meta.weights.random_init, weights_origin=meta.weights.origin,
                   precision=meta.precision.precision, engine=meta.precision.engine)


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
        return cls.of(fmt, image_bytes(image, fmt, quality=quality))


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
