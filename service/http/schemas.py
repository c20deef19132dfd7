"""Response models of the HTTP layer's own endpoints: errors and model descriptions."""

from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, Field, create_model

from service.contract import (
    MASKS, DetectionMetadata, Engine, FaceDetectionMetadata, LandmarkMetadata, ModelMetadata, Precision,
    SegmentationMetadata, TensorSpec, TierDeltas,
)


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable error code, e.g. 'payload_too_large'.")
    message: str


class ErrorResponse(BaseModel):
    """Body of every non-2xx response."""

    error: ErrorDetail


class ImageError(BaseModel):
    """An image of a several-image request that failed alone (the others are answered)."""

    index: int = Field(description="Position of the image in the request (0-based).")
    status: int = Field(description="The HTTP status this error has in a one-image request.")
    error: ErrorDetail


def batch_response(response: type[BaseModel]) -> type[BaseModel]:
    """The answer of a several-image request to an endpoint answering ``response`` per image:
    the results in request order, each an answer or an :class:`ImageError`."""
    name = response.__name__.removesuffix("Response") + "BatchResponse"
    return create_model(
        name,
        __doc__=f"Several images answered in order: each item a {response.__name__} or an "
        "ImageError (that image failed alone).",
        images=(int, Field(description="Images in the request.")),
        failed=(int, Field(description="Images that failed (ImageError items).")),
        results=(list[Union[response, ImageError]], ...),  # type: ignore[valid-type]
        timings_ms=(dict[str, float], Field(default_factory=dict, description="Wall-clock "
                    "milliseconds per stage of the whole request (all images).")),
    )


class WeightsSummary(BaseModel):
    origin: str
    format: str
    random_init: bool = Field(
        description="True: the network has random weights (a demo/test export); outputs are meaningless."
    )
    file: str | None = None
    sha256: str | None = None
    package: str | None = Field(None, description="Registry package the weights came from.")
    license: str | None = Field(None, description="License of the weights.")


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


class RuntimeInfo(BaseModel):
    """The backend serving a model and what executes it there."""

    backend: str = Field(description="'embedded' (ONNX Runtime in-process) or 'triton'.")
    providers: list[str] = Field(description="ONNX Runtime execution providers in use, in order "
                                 "(embedded), or Triton's backend, instance kind and accelerators.")


class TierInfo(BaseModel):
    """One precision tier of a checkpoint: the entry serving it and what it changes."""

    model: str = Field(description="The entry to request (the `model` option) for this tier.")
    precision: Precision
    engine: Engine
    calibration: str | None = Field(None, description="INT8: what the ranges were calibrated on.")
    deltas: TierDeltas | None = Field(
        None, description="Measured by the export against FP32 on the same inputs (None for "
        "FP32 itself, and for a tier that could not be measured where it was exported).")

    @classmethod
    def of(cls, meta: ModelMetadata) -> "TierInfo":
        """The tier ``meta`` serves."""
        p = meta.precision
        return cls(model=meta.name, precision=p.precision, engine=p.engine,
                   calibration=p.calibration, deltas=p.deltas)


class DetectionInfo(BaseModel):
    """What a detection model's answers hold."""

    head: str = Field(description="'faster_rcnn', 'mask_rcnn', 'cascade_rcnn' or "
                      "'cascade_mask_rcnn'.")
    outputs: list[str] = Field(description="What /detect can return per instance: 'boxes', and "
                               "'masks' for Mask R-CNN models (masks=true).")
    cascade_stages: int = Field(description="Box-head stages (3 for Cascade R-CNN).")
    mask_paste: str | None = Field(None, description="The official paste rule of the masks "
                                   "('legacy' or 'grid_sample'), None without masks.")


class ModelInfo(BaseModel):
    """A served model as clients see it."""

    name: str
    task: str
    arch: str
    dataset: str
    labels: list[str]
    num_labels: int
    palette: list[tuple[int, int, int]] | None = Field(
        None, description="RGB colour per label (segmentation: the label map PNG's palette).")
    input: InputConventions = Field(description="Conventions of the image input (the first input).")
    inputs: list[TensorSpec] = Field(
        description="Every graph input in order (per-item dims: the batch dimension is excluded)."
    )
    outputs: list[TensorSpec] = Field(description="Every graph output in order (per-item dims).")
    max_batch_size: int
    default_options: dict[str, Any] = Field(description="Test-time options used when a request omits them.")
    limits: dict[str, int] = Field(
        default_factory=dict, description="What the exported graph cannot exceed, e.g. "
        "detection's `max_detections` (the most boxes a request may ask for).")
    protocol: dict[str, Any] | None = Field(None, description="The task's full protocol parameters.")
    detection: DetectionInfo | None = Field(
        None, description="Detection models: their head, outputs (boxes, masks) and cascade stages.")
    weights: WeightsSummary
    random_init: bool = Field(description="Loud copy of weights.random_init.")
    default_for_task: bool = False
    runtime: RuntimeInfo = Field(description="What runs this model in this gateway.")
    precision: TierInfo = Field(description="The precision this entry runs, with its deltas.")
    base_model: str | None = Field(
        None, description="The FP32 entry this tier was made from (None: this is FP32).")
    tiers: list[TierInfo] = Field(
        default_factory=list, description="Every served precision tier of this checkpoint "
        "(this entry included), FP32 first: pick one with the `model` option.")

    @classmethod
    def from_metadata(cls, meta: ModelMetadata, *, is_default: bool = False,
                      backend: str = "embedded", providers: list[str] | None = None,
                      tiers: list[ModelMetadata] | None = None) -> "ModelInfo":
        """Describe ``meta`` for clients (``tiers``: the served entries of its checkpoint)."""
        defaults: dict[str, Any] = {}
        limits: dict[str, int] = {}
        detection = None
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
            limits = {"max_detections": d.max_detections}
            has_masks = d.masks is not None and any(o.name == MASKS for o in meta.outputs)
            if has_masks:
                defaults["masks"] = False
            detection = DetectionInfo(
                head=d.head, outputs=["boxes", "masks"] if has_masks else ["boxes"],
                cascade_stages=d.cascade_stages,
                mask_paste=d.masks.paste if has_masks and d.masks else None)
        elif isinstance(meta, FaceDetectionMetadata):
            f = meta.face_detection
            defaults = {"score_threshold": f.score_threshold, "nms_iou": f.nms_iou,
                        "tiles": list(f.tiles)}
        spec = meta.inputs[0]
        return cls(
            name=meta.name, task=meta.task, arch=meta.arch, dataset=meta.dataset,
            labels=list(meta.labels), num_labels=len(meta.labels),
            palette=list(meta.palette) if meta.palette else None,
            input=InputConventions(
                tensor=spec.name, dtype=spec.dtype, mean=meta.normalization.mean,
                std=meta.normalization.std, align_corners=meta.align_corners,
            ),
            inputs=list(meta.inputs), outputs=list(meta.outputs),
            max_batch_size=meta.max_batch_size, default_options=defaults, limits=limits,
            protocol=meta.protocol.model_dump(mode="json"), detection=detection,
            weights=WeightsSummary(**meta.weights.model_dump(include={
                "origin", "format", "random_init", "file", "sha256", "package", "license"})),
            random_init=meta.weights.random_init, default_for_task=is_default,
            runtime=RuntimeInfo(backend=backend, providers=list(providers or [])),
            precision=TierInfo.of(meta), base_model=meta.precision.base_model,
            tiers=[TierInfo.of(m) for m in (tiers if tiers is not None else [meta])],
        )


class ModelList(BaseModel):
    models: list[ModelInfo]


class Health(BaseModel):
    """``/healthz``: the process answers."""

    status: str = "ok"


class Readiness(BaseModel):
    """``/readyz``: 200 when ``status`` is ``ready``, else 503."""

    status: str = Field(description="'ready' or 'not_ready'.")
    detail: str = Field(description="'ok', or why not ready and what to do about it.")
    backend: str | None = Field(description="'embedded' or 'triton'.")
    models: list[str] = Field(description="Served model names.")
