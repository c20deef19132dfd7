"""The facial-landmarks task: faces -> official crops -> one batch of passes -> decoded points.

Faces of a request (each one of):

* a box ``[x1, y1, x2, y2]`` (or ``{"box": [...]}``): centre = box centre, scale =
  ``max(w, h) / 200 * box_enlarge`` (official rule, ``box_enlarge`` defaults to the model's 1.25);
* ``{"center": [x, y], "scale": s}``: used as given (``s * 200`` px = side of the crop square, no
  enlargement; this is the official ``center``/``scale`` *after* the loader's 1.25);
* no faces at all: the whole image is one face, the square of side ``max(W, H)`` centred on the
  image (no enlargement): clients that send an already cropped face get exactly that crop.

Coordinates are continuous image coordinates (the top-left pixel covers [0,1] x [0,1]; see
``service.landmarks``). All faces (and their flipped copies) go to the runner as one list of
passes, so they are batched together.
"""

from __future__ import annotations

import asyncio
import math
from typing import Literal, Union

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.errors import Unprocessable, describe_validation
from service.landmarks import (
    Face,
    box_to_face,
    crop_face,
    decode_heatmaps,
    flip_back,
    whole_image_face,
)
from service.contract import LandmarkProtocol, ModelMetadata
from service.metrics import Timings
from service.schemas import EncodedImage, ImageInput, ImageResult, TimingsMs

# Largest crop square accepted, as a multiple of the image's long side (guards against absurd
# scales; the official crop of such a square is almost all zeros anyway).
MAX_SIDE_FACTOR = 10.0
MIN_SIDE_PX = 4.0


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
    overlay: bool = Field(False, description="Return the image with the points drawn (base64).")
    overlay_format: Literal["jpeg", "png"] = "jpeg"


class LandmarksJsonRequest(ImageInput, LandmarkOptions):
    """JSON body: a base64 image, optional faces and options."""

    faces: list[FaceInput] | None = Field(
        None, description="Boxes [x1,y1,x2,y2] or {box} / {center, scale}; none: the whole image."
    )


class FaceResult(BaseModel):
    """Landmarks of one face."""

    index: int
    box: list[float] | None = Field(description="The box as sent (None for center/scale faces).")
    center: list[float] = Field(description="Crop centre used, image pixels.")
    scale: float = Field(description="Scale used (crop side = scale * 200 px).")
    crop_box: list[float] = Field(description="The square that was cropped, [x1, y1, x2, y2].")
    landmarks: list[list[float]] = Field(description="[[x, y], ...] in image pixels.")
    confidence: list[float] = Field(description="Heatmap peak value per landmark.")
    mean_confidence: float


class LandmarksResponse(ImageResult):
    """``POST /landmarks`` answer."""

    labels: list[str] = Field(description="Landmark names, in the order of each face's points.")
    faces_source: Literal["request", "whole_image"]
    options: dict = Field(description="Options actually used.")
    faces: list[FaceResult]
    overlay: EncodedImage | None = None
    timings_ms: TimingsMs


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


def check_face_count(n: int, max_faces: int) -> None:
    """422 ``too_many_faces`` when a request names more than ``max_faces`` faces."""
    if n > max_faces:
        raise Unprocessable(
            f"too many faces: {n} given, at most {max_faces} per request", code="too_many_faces"
        )


def resolve_faces(
    specs: list[FaceSpec] | None,
    width: int,
    height: int,
    enlarge: float,
    max_faces: int,
) -> list[Face]:
    """Validate the request's faces against the image and turn them into :class:`Face`s.

    422 for too many faces, non-finite numbers, degenerate boxes, non-positive scales, squares
    that miss the image entirely or that are absurdly large.
    """
    if not specs:
        return [whole_image_face(width, height)]
    check_face_count(len(specs), max_faces)
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
            face = box_to_face(spec.box, enlarge)
        else:
            if spec.scale is None or spec.scale <= 0:
                raise Unprocessable(f"face {i}: scale must be > 0, got {spec.scale}", code="invalid_face")
            face = Face((float(spec.center[0]), float(spec.center[1])), float(spec.scale))  # type: ignore[index]
        side = face.scale * 200.0
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
                f"face {i}: the crop square {_square(face)} lies outside the {width}x{height} image",
                code="face_outside_image",
            )
        faces.append(face)
    return faces


def _square(face: Face) -> list[float]:
    h = face.scale * 200.0
    cx, cy = face.center
    return [round(cx - h / 2, 4), round(cy - h / 2, 4), round(cx + h / 2, 4), round(cy + h / 2, 4)]


def heatmap_output(meta: ModelMetadata) -> str:
    """Name of the heatmap output (``heatmaps`` by convention, else the first output)."""
    names = [o.name for o in meta.outputs]
    return "heatmaps" if "heatmaps" in names else names[0]


def prepare_passes(
    image: np.ndarray, faces: list[Face], proto: LandmarkProtocol, *, flip: bool, contrast_stretch: bool
) -> list[np.ndarray]:
    """Network inputs (``3 x h x w`` float32 pixels): each face's crop, then (flip) its mirror."""
    passes = []
    for face in faces:
        crop, _ = crop_face(image, face, proto.input_size, contrast_stretch=contrast_stretch)
        chw = np.ascontiguousarray(crop.transpose(2, 0, 1))
        passes.append(chw)
        if flip:
            passes.append(np.ascontiguousarray(chw[:, :, ::-1]))
    return passes


def merge_heatmaps(
    outputs: list[np.ndarray], n_faces: int, flip: bool, flip_pairs: list[tuple[int, int]]
) -> np.ndarray:
    """``[N, K, H, W]`` heatmaps; with flip, the average of each face's plain and flipped-back maps."""
    hm = np.stack([np.asarray(o, dtype=np.float32) for o in outputs])
    if not flip:
        return hm
    hm = hm.reshape(n_faces, 2, *hm.shape[1:])
    return (hm[:, 0] + flip_back(hm[:, 1], flip_pairs)) * np.float32(0.5)


def draw_overlay(image: np.ndarray, faces: list[Face], points: np.ndarray, fmt: str) -> EncodedImage:
    """The image with each crop square (outline) and its landmarks (dots) drawn."""
    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    r = max(1.0, min(image.shape[:2]) / 200.0)
    for face, pts in zip(faces, points):
        draw.rectangle(_square(face), outline=(0, 255, 0), width=max(1, int(r)))
        for x, y in pts:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 0, 0))
    return EncodedImage.from_pil(im, fmt)  # type: ignore[arg-type]


async def run_landmarks(
    image: np.ndarray,
    meta: ModelMetadata,
    runner,  # service.runner.InferenceRunner (or anything with the same ``run``)
    faces: list[FaceSpec] | None,
    options: LandmarkOptions,
    *,
    max_faces: int,
    timings: Timings | None = None,
) -> LandmarksResponse:
    """The whole task for one decoded image (``H x W x 3`` uint8 RGB)."""
    timings = timings if timings is not None else Timings()
    proto = meta.landmarks or LandmarkProtocol()
    height, width = image.shape[:2]
    flip = proto.flip if options.flip is None else options.flip
    enlarge = proto.box_enlarge if options.box_enlarge is None else options.box_enlarge
    if flip and not meta.flip_pairs:
        raise Unprocessable(
            f"model '{meta.name}' has no flip_pairs, so flip augmentation is not available",
            code="flip_unavailable",
        )
    resolved = resolve_faces(faces, width, height, enlarge, max_faces)

    with timings.stage("preprocess"):
        passes = await asyncio.to_thread(
            prepare_passes, image, resolved, proto, flip=flip, contrast_stretch=options.contrast_stretch
        )
    results = await runner.run(meta, passes, timings=timings)
    with timings.stage("postprocess"):
        name = heatmap_output(meta)
        hm = merge_heatmaps([r[name] for r in results], len(resolved), flip, list(meta.flip_pairs))
        points, conf = decode_heatmaps(hm, resolved)
    overlay = None
    if options.overlay:
        with timings.stage("encode"):
            overlay = await asyncio.to_thread(draw_overlay, image, resolved, points, options.overlay_format)

    face_results = []
    for i, face in enumerate(resolved):
        face_results.append(
            FaceResult(
                index=i,
                box=list(faces[i].box) if faces and faces[i].box is not None else None,
                center=[float(face.center[0]), float(face.center[1])],
                scale=float(face.scale),
                crop_box=_square(face),
                landmarks=[[round(float(x), 4), round(float(y), 4)] for x, y in points[i]],
                confidence=[round(float(c), 6) for c in conf[i]],
                mean_confidence=round(float(np.mean(conf[i])), 6) if conf.shape[1] else 0.0,
            )
        )
    return LandmarksResponse(
        **LandmarksResponse.head(meta, width, height),
        labels=list(meta.labels),
        faces_source="request" if faces else "whole_image",
        options={
            "flip": flip,
            "box_enlarge": enlarge,
            "contrast_stretch": options.contrast_stretch,
            "overlay": options.overlay,
            "input_size": list(proto.input_size),
            "heatmap_size": list(hm.shape[2:]),
        },
        faces=face_results,
        overlay=overlay,
        timings_ms=timings.as_ms(),
    )
