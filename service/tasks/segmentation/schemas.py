"""Segmentation request options and answer (``POST /segment``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.tasks.schemas import EncodedImage, ImageInput, TaskResult, TimingsMs


Scale = Annotated[float, Field(ge=0.1, le=4.0)]
Scales = Annotated[list[Scale], Field(min_length=1, max_length=8)]
"""1 to 8 test scales, each in [0.1, 4]."""


class SegmentOptions(BaseModel):
    """Options of a segmentation request. Omitted test-time options take the model's defaults."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model name; default: the default segmentation model.")
    scales: Scales | Literal["multi"] | None = Field(
        None, description="Test scales (the long side becomes base_size*scale). 'multi': the "
        "model's official multi-scale set. Default: the model's scales (usually [1.0]).",
    )
    flip: bool | None = Field(None, description="Also run mirrored passes (default: model's).")
    window: Literal["cityscapes", "base"] | None = Field(
        None, description="Sliding-window variant override (default: model's).",
    )
    label_map: bool = Field(True, description="Return the label map as a palette PNG (base64).")
    rle: bool = Field(False, description="Return a COCO RLE mask per class present.")
    confidence: bool = Field(False, description="Return the per-pixel confidence (max score / "
                             "sum of scores) as an 8-bit PNG.")
    overlay: bool = Field(False, description="Return the image blended with the class colours.")
    overlay_format: Literal["jpeg", "png"] = "jpeg"
    overlay_alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the class colours.")
    legend: bool = Field(True, description="Draw a legend of the classes present on the overlay.")
    polygons: bool = Field(False, description="Return each class's regions as polygons with "
                           "holes (OpenCV contours), one per connected region.")
    polygon_tolerance: float = Field(
        1.0, ge=0.0, le=100.0, description="Polygon simplification (Douglas-Peucker) in pixels; "
        "0 keeps every contour vertex.")
    label_ids: bool = Field(False, description="Also return the map in dataset label ids "
                            "(Cityscapes: train id -> id) as an 8-bit PNG.")


class SegmentRequest(ImageInput, SegmentOptions):
    """JSON body of ``POST /segment``: a base64 image plus options."""


class Polygon(BaseModel):
    """One connected region of a class: its outline and the outlines of its holes."""

    exterior: list[list[float]] = Field(
        description="[[x, y], ...]: centres of the region's boundary pixels, image frame (the "
        "top-left pixel's centre is 0.5, 0.5); the ring is closed implicitly.")
    holes: list[list[list[float]]] = Field(default_factory=list, description="Rings of its holes.")


class ClassStat(BaseModel):
    """One class present in the label map."""

    id: int = Field(description="Class index (a label map pixel value; Cityscapes: the train id).")
    name: str
    label_id: int | None = Field(None, description="The dataset's own label id of this class "
                                 "(Cityscapes: train id -> id, e.g. road 0 -> 7), if it has one.")
    pixels: int
    fraction: float = Field(description="pixels / (width * height).")
    rle: dict | None = Field(None, description="COCO RLE {size: [h, w], counts} of this class.")
    polygons: list[Polygon] | None = Field(
        None, description="Its regions as polygons (one per 8-connected region; regions one or "
        "two pixels across have no polygon, the RLE is exact), if requested.")


class UsedOptions(BaseModel):
    """The test-time options a request ran with (request values, else the model's defaults)."""

    scales: list[float]
    flip: bool
    window: str
    base_size: int
    crop_size: tuple[int, int]
    resize_to_square: int | None
    align_corners: bool
    passes: int


class SegmentResponse(TaskResult):
    """``POST /segment`` answer: the shared head (model, random_init, image_size), then the
    options used, the classes present and the requested maps (each ``image_size``)."""

    options: UsedOptions = Field(description="Options actually used.")
    labels: list[str] = Field(description="Class names; a label map pixel indexes this list.")
    classes: list[ClassStat]
    label_map: EncodedImage | None = Field(
        None, description="Indexed PNG: pixel value = class index, palette = dataset colours."
    )
    confidence: EncodedImage | None = Field(
        None, description="8-bit PNG of max score / sum of scores (255 = 1), if requested."
    )
    overlay: EncodedImage | None = Field(None, description="The image blended with the class "
                                         "colours, if requested.")
    label_ids: EncodedImage | None = Field(None, description="8-bit PNG of dataset label ids "
                                           "(Cityscapes), if requested.")
    timings_ms: TimingsMs
