"""Face-detection request options and answer (``POST /faces``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.tasks.schemas import EncodedImage, ImageInput, ImageResult, TimingsMs

#: Highest tiling level a request may ask for (level k runs about (2k - 1)^2 tiles).
MAX_TILE_LEVEL = 4


class FaceDetectOptions(BaseModel):
    """Options of ``POST /faces`` (form fields, query parameters or JSON fields)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model name; default: the face_detection default.")
    score_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Minimum face score (default: the model's, 0.6 for "
        "BlazeFace full range, as MediaPipe).")
    max_faces: int | None = Field(
        None, ge=1, le=10_000, description="Most faces returned, best first (default and upper bound: "
        "HRNET_MAX_FACES).")
    tiles: list[int] | None = Field(
        None, min_length=1, max_length=MAX_TILE_LEVEL,
        description="Tiling levels (default: the model's). Level 1 is the whole image "
        "letterboxed into the network input (MediaPipe's only pass); level k adds square tiles "
        "of side max(W, H) / k overlapping by half, all in one batch, for faces too small for "
        "one pass. Levels whose tiles would be under half the network input are skipped.")
    overlay: bool = Field(False, description="Return the image with the faces drawn (base64).")
    overlay_format: Literal["jpeg", "png"] = "jpeg"

    @field_validator("tiles")
    @classmethod
    def _levels(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(not 1 <= k <= MAX_TILE_LEVEL for k in v):
            raise ValueError(f"tiling levels must lie in 1..{MAX_TILE_LEVEL}")
        return sorted(set(v)) if v is not None else None


class FacesJsonRequest(ImageInput, FaceDetectOptions):
    """JSON body of ``POST /faces``: a base64 image plus options."""


class DetectedFace(BaseModel):
    """One face the detector found."""

    index: int
    box: list[float] = Field(description="[x1, y1, x2, y2] in image pixels (may extend past "
                             "the image border, as MediaPipe's boxes do).")
    score: float
    keypoints: list[list[float]] = Field(description="[[x, y], ...] in the order of "
                                         "``keypoint_names``.")


class FacesResponse(ImageResult):
    """``POST /faces`` answer."""

    keypoint_names: list[str]
    options: dict = Field(description="Options actually used.")
    faces: list[DetectedFace]
    overlay: EncodedImage | None = None
    timings_ms: TimingsMs
