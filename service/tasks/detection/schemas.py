"""Detection request options and answer (``POST /detect``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer,
)

from service.tasks.schemas import EncodedImage, ImageInput, ImageResult, TimingsMs


Scale = Annotated[float, Field(ge=0.1, le=4.0)]
Side = Annotated[int, Field(ge=32, le=4096)]


class DetectOptions(BaseModel):
    """Options of ``POST /detect`` (form fields, query parameters or JSON fields)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model name; default: the detection default.")
    score_threshold: float | None = Field(None, ge=0.0, le=1.0,
                                          description="Minimum score (default: the model's 0.05).")
    max_detections: int | None = Field(
        None, ge=1, le=1000, description="Most boxes returned (default and upper bound: the "
        "model's `limits.max_detections` in /v1/models, the graph's cap of 100 for the official "
        "configs; a larger value answers 422).")
    classes: list[str | int] | None = Field(
        None, description="Keep only these classes: names or label indices (1..80 for COCO).")
    scales: list[Scale] = Field(default_factory=lambda: [1.0], min_length=1, max_length=6,
                                description="Multiples of the model's max_size (TTA when > 1), "
                                "1 to 6 values in [0.1, 4].")
    flip: bool = Field(False, description="Also run the horizontally flipped image (TTA).")
    merge: Literal["nms", "wbf"] = Field("nms", description="How TTA passes are merged.")
    max_size: tuple[Side, Side] | None = Field(
        None, description="(long, short) resize limits, sides in [32, 4096]; default the "
        "model's (1333, 800).")
    masks: bool = Field(
        False, description="Mask R-CNN models: each detection's instance mask as COCO RLE "
        "(pycocotools, original-image pixels) with its area, pasted by the official rule of the "
        "checkpoint's origin; 422 for models without masks (see outputs in /v1/models).")
    polygons: bool = Field(False, description="Also each mask's outline as polygons with holes "
                           "(implies masks).")
    polygon_tolerance: float = Field(1.0, ge=0.0, le=100.0, description="Polygon simplification "
                                     "tolerance in pixels (0: every boundary pixel).")
    overlay: bool = Field(False, description="Return the image with the boxes drawn (per-class "
                          "colours, captions on a background), and the masks when asked for.")
    overlay_format: Literal["jpeg", "png"] = "jpeg"
    coco_results: bool = Field(
        False, description="Also return the detections in the COCO results-file layout "
        "(`[{image_id, category_id, bbox: [x, y, w, h], score}]`; concatenate the lists of "
        "several images to write a results file for pycocotools' COCOeval).")
    image_id: int = Field(0, ge=0, le=2**53 - 1,
                          description="`image_id` written into `coco_results`.")

    @field_validator("classes", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        if isinstance(v, str):  # "person,dog" from a form field or query string
            return [p.strip() for p in v.split(",") if p.strip()]
        return v


class DetectRequest(ImageInput, DetectOptions):
    """JSON body of ``POST /detect``: a base64 image plus options."""


class InstanceMask(BaseModel):
    """One detection's mask in original-image pixels."""

    rle: dict = Field(description="COCO RLE: {size: [height, width], counts: compressed text} "
                      "(pycocotools.mask.decode reads it).")
    area: int = Field(description="Mask pixels.")
    polygons: list[dict] | None = Field(
        None, description="With polygons=true: regions {exterior: [[x, y], ...], holes: [...]}, "
        "vertices at boundary pixel centres.")


class Detection(BaseModel):
    """One detected object."""

    # The serializer below only drops an unasked ``mask``: document the fields as declared.
    model_config = ConfigDict(json_schema_mode_override="validation")

    label: str
    label_index: int = Field(description="Index into the model's labels (0 = background).")
    category_id: int | None = Field(None, description="Dataset category id (COCO), if known.")
    score: float
    box: list[float] = Field(description="[x1, y1, x2, y2], original image pixels.")
    bbox: list[float] = Field(description="The same box as COCO writes it: [x, y, width, height] "
                              "(x, y = the top-left corner).")
    mask: InstanceMask | None = Field(None, description="With masks=true (Mask R-CNN models).")

    @model_serializer(mode="wrap")
    def _drop_unasked(self, handler: SerializerFunctionWrapHandler):  # noqa: ANN202 (schema: the fields)
        return _without_none(handler(self), "mask")


class CocoResult(BaseModel):
    """One entry of a COCO detection results file."""

    model_config = ConfigDict(json_schema_mode_override="validation")

    image_id: int
    category_id: int
    bbox: list[float] = Field(description="[x, y, width, height], original image pixels.")
    score: float
    segmentation: dict | None = Field(None, description="The mask's COCO RLE (masks=true).")

    @model_serializer(mode="wrap")
    def _drop_unasked(self, handler: SerializerFunctionWrapHandler):  # noqa: ANN202 (schema: the fields)
        return _without_none(handler(self), "segmentation")


def _without_none(data: dict, key: str) -> dict:
    """``data`` without ``key`` when it is None (answers of box-only requests stay as before)."""
    if data.get(key, 0) is None:
        data.pop(key)
    return data


class DetectResponse(ImageResult):
    """``POST /detect`` answer."""

    options: dict = Field(description="Options actually used.")
    detections: list[Detection] = Field(description="Best first.")
    coco_results: list[CocoResult] | None = Field(
        None, description="The detections in the COCO results-file layout, if requested (only "
        "detections of labels with a category id).")
    overlay: EncodedImage | None = None
    timings_ms: TimingsMs
