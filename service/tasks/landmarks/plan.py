"""Facial-landmark planning: the request's faces -> official crop squares -> one pass per crop.

Faces of a request (each one of):

* a box ``[x1, y1, x2, y2]`` (or ``{"box": [...]}``): centre = box centre, scale =
  ``max(w, h) / scale_unit * box_enlarge`` (official rule: unit 200, ``box_enlarge`` 1.25);
* ``{"center": [x, y], "scale": s}``: used as given (``s * scale_unit`` px = side of the crop
  square, no enlargement; this is the official ``center``/``scale`` *after* the loader's 1.25);
* ``"auto"``, the default when a request gives no faces: the faces the face detector finds
  (the landmark task's upstream, :mod:`service.tasks.face_detection`, run on the same image
  first); each detected box becomes a face by the box rule above (the documented enlargement).
  With no face-detection model served, an omitted ``faces`` falls back to the whole image (the
  answer's ``faces_source`` says which happened); an explicit ``"auto"`` is then a 404;
* ``"whole_image"``: the whole image is one face, the square of side ``max(W, H)`` centred on
  the image (no enlargement): clients that send an already cropped face get exactly that crop.

Coordinates are continuous image coordinates (the top-left pixel covers [0,1] x [0,1]; see
:mod:`service.tasks.landmarks.geometry`). All faces (and their flipped copies) are one list of
passes, so the runner batches them together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import ValidationError

from service.contract import IMAGE, LandmarkMetadata, ModelMetadata
from service.errors import Unprocessable, describe_validation
from service.tasks.common import Limits, UpstreamRun
from service.tasks.face_detection.merge import Faces
from service.tasks.face_detection.schemas import FaceDetectOptions
from service.tasks.landmarks.geometry import Face, box_to_face, crop_face, whole_image_face
from service.tasks.landmarks.schemas import FaceInput, FaceSpec, LandmarkOptions

FacesSource = Literal["request", "whole_image", "detected"]

# Largest crop square accepted, as a multiple of the image's long side (guards against absurd
# scales; the official crop of such a square is almost all zeros anyway).
MAX_SIDE_FACTOR = 10.0
MIN_SIDE_PX = 4.0


@dataclass(frozen=True)
class LandmarkRequest:
    """A request's options and faces with the model's defaults applied."""

    options: LandmarkOptions
    faces: list[FaceSpec] | None  # the request's faces (source "request")
    flip: bool
    box_enlarge: float
    source: FacesSource = "request"  # "detected": faces=auto, detected faces attached later
    auto_explicit: bool = False  # faces="auto" was sent (no fallback without a detector)
    detected: Faces | None = None  # the face detector's answer (attach_faces)
    face_model: ModelMetadata | None = None  # the detector that found them
    face_request: Any = None  # its resolved options (FaceDetectionRequest)


def resolve(options: LandmarkOptions, extras: dict[str, Any], meta: LandmarkMetadata,
            limits: Limits) -> LandmarkRequest:
    """Options + the ``faces`` field; 422 for bad faces, too many faces or an unavailable flip."""
    proto = meta.landmarks
    raw = extras.get("faces")
    mode: FacesSource = "request"
    faces: list[FaceSpec] | None = None
    if raw is None or raw == "auto":
        mode = "detected"
    elif raw == "whole_image":
        mode = "whole_image"
    elif isinstance(raw, str):
        raise Unprocessable("'faces' must be 'auto', 'whole_image' or a JSON list of faces",
                            code="invalid_face")
    else:
        faces = parse_faces(raw)
        if not faces:  # an empty list: the whole image, as it always was
            mode, faces = "whole_image", None
    if faces is not None and len(faces) > limits.max_faces:
        raise Unprocessable(
            f"too many faces: {len(faces)} given, at most {limits.max_faces} per request",
            code="too_many_faces")
    if options.max_faces is not None and options.max_faces > limits.max_faces:
        raise Unprocessable(f"max_faces {options.max_faces} is above the limit of "
                            f"{limits.max_faces} faces per request", code="too_many_faces")
    flip = proto.flip if options.flip is None else options.flip
    if flip and not meta.flip_pairs:
        raise Unprocessable(
            f"model '{meta.name}' has no flip_pairs, so flip augmentation is not available",
            code="flip_unavailable")
    enlarge = proto.box_enlarge if options.box_enlarge is None else options.box_enlarge
    return LandmarkRequest(options, faces, flip, enlarge, mode, raw == "auto")


def face_options(req: LandmarkRequest) -> FaceDetectOptions | None:
    """The face detector's options of a faces=auto request (None: the request has faces)."""
    if req.source != "detected":
        return None
    o = req.options
    return FaceDetectOptions(model=o.face_model, score_threshold=o.min_face_score,
                             max_faces=o.max_faces)


def attach_faces(req: LandmarkRequest, found: Faces, run: UpstreamRun) -> LandmarkRequest:
    """The request with the detector's faces (and the detector and its options) attached."""
    return replace(req, detected=found, face_model=run.meta, face_request=run.resolved)


def without_detector(req: LandmarkRequest) -> LandmarkRequest | None:
    """An omitted ``faces`` with no face detector served: the whole image, as before detectors
    (None for an explicit ``"auto"``: 404 then)."""
    return None if req.auto_explicit else replace(req, source="whole_image")


def parse_face(item: FaceInput | dict) -> FaceSpec:
    """A face item of the request (list = box, dict/FaceSpec = box or centre+scale)."""
    if isinstance(item, FaceSpec):
        return item
    if isinstance(item, dict):
        return FaceSpec.model_validate(item)
    if isinstance(item, (list, tuple)):
        if len(item) != 4:
            raise Unprocessable(
                f"a face box needs 4 numbers [x1, y1, x2, y2], got {len(item)}", code="invalid_face"
            )
        return FaceSpec(box=[float(v) for v in item])
    raise Unprocessable("a face must be a box [x1,y1,x2,y2] or {center, scale}", code="invalid_face")


def parse_faces(raw: object) -> list[FaceSpec] | None:
    """The request's ``faces`` field (None: not given); 422 ``invalid_face`` naming the face."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise Unprocessable("'faces' must be a JSON list of boxes or {center, scale}", code="invalid_face")
    out = []
    for i, item in enumerate(raw):
        try:
            out.append(parse_face(item))
        except Unprocessable as exc:
            raise Unprocessable(f"face {i}: {exc.message}", code="invalid_face") from None
        except ValidationError as exc:
            raise Unprocessable(f"face {i}: {describe_validation(exc.errors())}", code="invalid_face") from None
        except (TypeError, ValueError) as exc:
            raise Unprocessable(f"face {i}: {exc}", code="invalid_face") from None
    return out


@dataclass(frozen=True)
class LandmarkPlan:
    """One crop per face (and its mirror image with flip), all of the model's input size."""

    faces: list[Face]
    flip: bool
    input_size: tuple[int, int]
    contrast_stretch: bool
    flip_pairs: list[tuple[int, int]]  # swapped when a mirrored crop's heatmaps are flipped back
    heatmap_size: tuple[int, int]  # what the network must return, and the decode's geometry
    num_landmarks: int = 0  # points per face (the answer's shape when no face was detected)

    reduce_hint: ClassVar[str] = "send fewer faces or no flip"

    @property
    def n_passes(self) -> int:
        return len(self.faces) * (2 if self.flip else 1)

    @property
    def n_pixels(self) -> int:
        return self.n_passes * self.input_size[0] * self.input_size[1]

    def passes(self, image: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Each face's crop (``3 x h x w`` float32 pixels), then (flip) its mirror."""
        passes = []
        # The shrink step stretches by the whole image's range: scan it once for all faces.
        image_range = (int(image.min()), int(image.max())) if len(self.faces) > 1 else None
        for face in self.faces:
            crop, _ = crop_face(image, face, self.input_size,
                                contrast_stretch=self.contrast_stretch, image_range=image_range)
            chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
            passes.append({IMAGE: chw})
            if self.flip:
                passes.append({IMAGE: np.ascontiguousarray(chw[:, :, ::-1])})
        return passes


def plan(req: LandmarkRequest, meta: LandmarkMetadata, image_size: tuple[int, int]) -> LandmarkPlan:
    """The crops of the request's faces in an image of ``image_size = (h, w)``."""
    proto = meta.landmarks
    height, width = image_size
    if req.source == "detected":
        if req.detected is None:
            raise RuntimeError("faces=auto planned before the face detector ran")
        faces = [box_to_face(box, req.box_enlarge, proto.scale_unit) for box in req.detected.boxes]
    elif req.source == "whole_image":
        faces = [whole_image_face(width, height, proto.scale_unit)]
    else:
        faces = resolve_faces(req.faces, width, height, req.box_enlarge, proto.scale_unit)
    return LandmarkPlan(faces, req.flip, tuple(proto.input_size), req.options.contrast_stretch,
                        [(int(a), int(b)) for a, b in meta.flip_pairs], tuple(proto.heatmap_size),
                        len(meta.labels))


def resolve_faces(specs: list[FaceSpec] | None, width: int, height: int, enlarge: float,
                  unit: float) -> list[Face]:
    """Validate the request's faces against the image and turn them into :class:`Face`s.

    422 for non-finite numbers, degenerate boxes, non-positive scales, squares that miss the
    image entirely or that are absurdly large.
    """
    if not specs:
        return [whole_image_face(width, height, unit)]
    faces = []
    long_side = max(width, height)
    for i, spec in enumerate(specs):
        nums = (spec.box or []) + (spec.center or []) + ([spec.scale] if spec.scale is not None else [])
        if not all(math.isfinite(v) for v in nums):
            raise Unprocessable(f"face {i}: coordinates must be finite numbers", code="invalid_face")
        if spec.box is not None:
            x1, y1, x2, y2 = spec.box
            if x2 <= x1 or y2 <= y1:
                raise Unprocessable(
                    f"face {i}: degenerate box {spec.box} (needs x2 > x1 and y2 > y1)", code="invalid_face"
                )
            face = box_to_face(spec.box, enlarge, unit)
        else:
            if spec.scale is None or spec.scale <= 0:
                raise Unprocessable(f"face {i}: scale must be > 0, got {spec.scale}", code="invalid_face")
            face = Face((float(spec.center[0]), float(spec.center[1])), float(spec.scale), unit)  # type: ignore[index]
        side = face.side
        if side < MIN_SIDE_PX:
            raise Unprocessable(
                f"face {i}: the crop square is {side:.3g} px; at least {MIN_SIDE_PX:g} px needed",
                code="invalid_face",
            )
        if side > MAX_SIDE_FACTOR * long_side:
            raise Unprocessable(
                f"face {i}: the crop square is {side:.6g} px, more than {MAX_SIDE_FACTOR:g}x the "
                f"image's long side ({long_side} px)",
                code="invalid_face",
            )
        cx, cy = face.center
        if cx + side / 2 <= 0 or cy + side / 2 <= 0 or cx - side / 2 >= width or cy - side / 2 >= height:
            raise Unprocessable(
                f"face {i}: the crop square {face.square()} lies outside the {width}x{height} image",
                code="face_outside_image",
            )
        faces.append(face)
    return faces
