"""Facial-landmark request options, faces and answer (``POST /landmarks``)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.tasks.face_detection.schemas import DetectedFace
from service.tasks.schemas import EncodedImage, ImageInput, ImageResult, ModelUsed, TimingsMs


class FaceSpec(BaseModel):
    """One face: a ``box`` or a ``center`` + ``scale``."""

    model_config = ConfigDict(extra="forbid")

    box: list[float] | None = Field(
        None, min_length=4, max_length=4, description="[x1, y1, x2, y2] in image pixels."
    )
    center: list[float] | None = Field(None, min_length=2, max_length=2, description="[x, y].")
    scale: float | None = Field(None, description="scale * 200 px = side of the square crop.")

    @model_validator(mode="after")
    def _one_form(self) -> "FaceSpec":
        if self.box is not None and (self.center is not None or self.scale is not None):
            raise ValueError("give either 'box' or 'center' + 'scale', not both")
        if self.box is None and (self.center is None or self.scale is None):
            raise ValueError("a face needs 'box' or both 'center' and 'scale'")
        return self


FaceInput = Union[list[float], FaceSpec]
#: ``faces`` as a word: ``auto`` runs the face detector, ``whole_image`` crops the whole image.
FacesMode = Literal["auto", "whole_image"]


class LandmarkOptions(BaseModel):
    """Per-request options (each defaults to the model's protocol)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str | None = Field(None, description="Model name; default: the landmarks default model.")
    flip: bool | None = Field(
        None, description="Flip test-time augmentation (the official test uses none)."
    )
    box_enlarge: float | None = Field(
        None, gt=0, le=10, description="Box -> scale enlargement (official 1.25)."
    )
    contrast_stretch: bool = Field(
        True,
        description="Reproduce scipy.misc.imresize's contrast stretch of the official crop.",
    )
    overlay: bool = Field(False, description="Return the image with each face's box, its "
                          "landmark contours and points drawn (base64).")
    overlay_format: Literal["jpeg", "png"] = "jpeg"
    coco_keypoints: bool = Field(
        False, description="Also return each face's points as COCO keypoint triplets "
        "`[x1, y1, s1, x2, y2, s2, ...]` with s = the point's `score` (as COCO results files "
        "carry them).")
    face_model: str | None = Field(
        None, description="Face detector of faces=auto (default: the face_detection default).")
    min_face_score: float | None = Field(
        None, ge=0.0, le=1.0, description="faces=auto: minimum detector score (default: the "
        "detector's, 0.6 for BlazeFace full range).")
    max_faces: int | None = Field(
        None, ge=1, le=10_000, description="faces=auto: most detected faces, best first (default and upper "
        "bound: HRNET_MAX_FACES).")


class LandmarksJsonRequest(ImageInput, LandmarkOptions):
    """JSON body: a base64 image, optional faces and options."""

    faces: list[FaceInput] | FacesMode | None = Field(
        None, description="Boxes [x1,y1,x2,y2] or {box} / {center, scale}; 'auto' (the default "
        "when omitted): the faces a face detector finds; 'whole_image': the whole image is one "
        "face."
    )


class FaceResult(BaseModel):
    """Landmarks of one face."""

    index: int
    box: list[float] | None = Field(description="The box as sent or as detected (None for "
                                    "center/scale faces and the whole image).")
    center: list[float] = Field(description="Crop centre used, image pixels.")
    scale: float = Field(description="Scale used (crop side = scale * 200 px).")
    crop_box: list[float] = Field(description="The square that was cropped, [x1, y1, x2, y2].")
    landmarks: list[list[float]] = Field(description="[[x, y], ...] in image pixels.")
    confidence: list[float] = Field(
        description="Per landmark, the heatmap's peak value: the network's raw output at the "
        "decoded point. Not a probability: the network is trained to output a Gaussian of peak "
        "1.0 around the landmark (MSE loss), so trained models give values near 1 for sharp, "
        "confident points and lower ones for doubtful points; it may exceed 1 or be negative "
        "(random-init models give arbitrary values).")
    mean_confidence: float = Field(description="Mean of `confidence`.")
    scores: list[float] = Field(
        description="Per landmark, `confidence` clipped to [0, 1] (min(max(peak, 0), 1)): a "
        "bounded score, still not a calibrated probability.")
    score: float = Field(description="Mean of `scores` (the face's score in COCO results).")
    keypoints: list[float] | None = Field(
        None, description="COCO keypoint triplets [x1, y1, s1, ...] (s = `scores`), if requested.")
    detection: DetectedFace | None = Field(
        None, description="faces=auto: the detector's face (box, score, keypoints) this crop "
        "was made from.")


class LandmarksResponse(ImageResult):
    """``POST /landmarks`` answer."""

    labels: list[str] = Field(description="Landmark names, in the order of each face's points.")
    faces_source: Literal["request", "whole_image", "detected"]
    face_model: ModelUsed | None = Field(
        None, description="The face detector that found the faces (faces_source 'detected').")
    options: dict = Field(description="Options actually used.")
    faces: list[FaceResult]
    overlay: EncodedImage | None = None
    timings_ms: TimingsMs
