"""The contract writer: the repository metadata (``service.contract.ModelMetadata``) of an export.

:func:`build_metadata` assembles a model's metadata from its dataset's facts
(:mod:`model_export.datasets`), the graph's tensor specs (:func:`io_specs`, with the contract's
tensor names) and the protocol overrides an export makes (segmentation base / crop size,
detection resize limit and test settings), which it records in the notes. Torch-free.
"""

from __future__ import annotations

from service.contract import (
    MERGE_GRAPH_FILENAME,
    BOXES,
    MASKS,
    CLASSIFICATORS,
    HEATMAPS,
    IMAGE,
    IMAGE_SIZE,
    LABELS,
    LOGITS,
    REGRESSORS,
    SCORES,
    DetectionMetadata,
    DetectionProtocol,
    ExportInfo,
    FaceDetectionMetadata,
    FaceDetectionProtocol,
    LandmarkMetadata,
    ModelMetadata,
    PrecisionInfo,
    SegmentationMetadata,
    Normalization,
    SegmentationProtocol,
    TensorSpec,
    TierDeltas,
    WeightsInfo,
)

from model_export.datasets import (
    LANDMARK_HEATMAP_SIZE,
    LANDMARK_INPUT_SIZE,
    DatasetInfo,
    get_dataset,
)
from model_export.mediapipe import count_anchors

# --------------------------------------------------------------------------------------------
# Settings that depend on the checkpoint
# --------------------------------------------------------------------------------------------

# Bilinear convention by checkpoint origin. Official pytorch-v1.1/master call interpolate without
# the argument (False); the HRNet-OCR branch's plain-HRNet W48 Cityscapes/LIP/PASCAL configs set
# False; MMSegmentation/MMPose/MMDetection use False. (HRNet-OCR's ADE20K/COCO-Stuff and OCR
# models use True: export those with --align-corners.)
ALIGN_CORNERS_BY_ORIGIN: dict[str, bool] = {
    "official": False,
    "mmseg": False,
    "mmpose": False,
    "mmdet": False,
    "mmdet-legacy": False,
    "random-init": False,
    "torch": False,
}


def default_align_corners(origin: str) -> bool:
    """The align_corners a checkpoint of this origin was trained and tested with."""
    return ALIGN_CORNERS_BY_ORIGIN.get(origin, False)


# --------------------------------------------------------------------------------------------
# Protocols with an export's overrides, tensor specs, the document
# --------------------------------------------------------------------------------------------


def segmentation_protocol(
    dataset: DatasetInfo,
    *,
    base_size: int | None = None,
    crop_size: tuple[int, int] | None = None,
) -> SegmentationProtocol:
    """The dataset's official protocol with optional base/crop overrides.

    A square-resizing dataset (LIP) keeps ``resize_to_square == base_size`` and, unless given,
    ``crop_size == (base_size, base_size)``, as in the official configuration.
    """
    proto = dataset.segmentation
    if proto is None:
        raise ValueError(f"dataset {dataset.name!r} is not a segmentation dataset")
    update: dict[str, object] = {}
    if base_size is not None:
        if base_size < 8:
            raise ValueError(f"base size {base_size} is too small")
        update["base_size"] = int(base_size)
        if proto.resize_to_square is not None:
            update["resize_to_square"] = int(base_size)
            if crop_size is None:
                update["crop_size"] = (int(base_size), int(base_size))
    if crop_size is not None:
        h, w = (int(v) for v in crop_size)
        if h < 8 or w < 8:
            raise ValueError(f"crop size {crop_size} is too small")
        update["crop_size"] = (h, w)
    return proto.model_copy(update=update) if update else proto


def io_specs(task: str, num_outputs: int, face: FaceDetectionProtocol | None = None,
             detection: DetectionProtocol | None = None
             ) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Graph inputs/outputs (batch excluded) of an exported network of this task (a face
    detector's shapes come from its protocol ``face``; a Mask R-CNN's ``masks`` output from its
    ``detection`` protocol)."""
    if task == "segmentation":
        return (
            [TensorSpec(name=IMAGE, dtype="FP32", dims=[3, -1, -1])],
            [TensorSpec(name=LOGITS, dtype="FP32", dims=[num_outputs, -1, -1])],
        )
    if task == "landmarks":
        h, w = LANDMARK_INPUT_SIZE
        hh, hw = LANDMARK_HEATMAP_SIZE
        return (
            [TensorSpec(name=IMAGE, dtype="FP32", dims=[3, h, w])],
            [TensorSpec(name=HEATMAPS, dtype="FP32", dims=[num_outputs, hh, hw])],
        )
    if task == "detection":
        # One image per call; image_size = (valid_h, valid_w) of the resized image before padding.
        return (
            [TensorSpec(name=IMAGE, dtype="FP32", dims=[3, -1, -1]),
             TensorSpec(name=IMAGE_SIZE, dtype="INT64", dims=[2])],
            [TensorSpec(name=BOXES, dtype="FP32", dims=[-1, 4]),
             TensorSpec(name=SCORES, dtype="FP32", dims=[-1]),
             TensorSpec(name=LABELS, dtype="INT64", dims=[-1])]
            + ([TensorSpec(name=MASKS, dtype="FP32", dims=[-1, detection.masks.resolution,
                                                           detection.masks.resolution])]
               if detection is not None and detection.masks is not None else []),
        )
    if task == "face_detection":
        if face is None:
            raise ValueError("face detection tensor specs need the model's protocol")
        h, w = face.input_size
        anchors = count_anchors(face.anchors, (h, w))
        return (
            [TensorSpec(name=IMAGE, dtype="FP32", dims=[3, h, w])],
            [TensorSpec(name=REGRESSORS, dtype="FP32", dims=[anchors, 4 + 2 * len(face.keypoints)]),
             TensorSpec(name=CLASSIFICATORS, dtype="FP32", dims=[anchors, 1])],
        )
    raise NotImplementedError(f"no tensor specs for task {task!r} yet")


def detection_protocol(
    dataset: DatasetInfo,
    *,
    max_size: tuple[int, int] | None = None,
    **settings: object,
) -> DetectionProtocol:
    """The dataset's detection protocol with an optional ``(long, short)`` resize limit and the
    model's own test settings (``score_threshold``, ``nms_iou``, ``box_convention``...)."""
    proto = dataset.detection
    if proto is None:
        raise ValueError(f"dataset {dataset.name!r} is not a detection dataset")
    update: dict[str, object] = dict(settings)
    if max_size is not None:
        long_side, short_side = max(max_size), min(max_size)
        if short_side < 32:
            raise ValueError(f"max size {max_size} is too small")
        update["max_size"] = (int(long_side), int(short_side))
    return proto.model_copy(update=update) if update else proto


def build_metadata(
    *,
    name: str,
    task: str,
    arch: str,
    dataset: str | DatasetInfo,
    weights: WeightsInfo,
    export: ExportInfo,
    max_batch_size: int,
    align_corners: bool | None = None,
    base_size: int | None = None,
    crop_size: tuple[int, int] | None = None,
    detection: DetectionProtocol | None = None,
    face_detection: FaceDetectionProtocol | None = None,
    normalization: Normalization | None = None,
    notes: list[str] | None = None,
) -> ModelMetadata:
    """Assemble the repository metadata of one exported model.

    ``align_corners`` defaults by ``weights.origin``. Segmentation protocol overrides
    (``base_size``/``crop_size``) that differ from the official values are recorded in ``notes``.
    Detection: ``detection`` is the protocol the graph was built for (default: the dataset's)
    and the graph serves one image per call. Face detection: ``face_detection`` is the model's
    protocol (required: it depends on the model, not the dataset) and ``normalization`` the
    model's input range (default: the dataset's).
    """
    ds = dataset if isinstance(dataset, DatasetInfo) else get_dataset(dataset)
    if ds.task != task:
        raise ValueError(f"dataset {ds.name!r} is for task {ds.task!r}, not {task!r}")
    if align_corners is None:
        align_corners = default_align_corners(weights.origin)
    all_notes = list(notes or [])
    if weights.random_init:
        all_notes.insert(0, "RANDOM-INIT WEIGHTS: outputs are meaningless; for tests and demos only.")
    inputs, outputs = io_specs(task, ds.num_outputs, face_detection, detection)
    seg = lm = det = face = None
    if task == "segmentation":
        seg = segmentation_protocol(ds, base_size=base_size, crop_size=crop_size)
        # Every segmentation entry carries the merge graph (written by write_entry).
        seg = seg.model_copy(update={"merge_graph": MERGE_GRAPH_FILENAME})
        official = ds.segmentation
        assert official is not None
        if seg.base_size != official.base_size or tuple(seg.crop_size) != tuple(official.crop_size):
            all_notes.append(
                f"Protocol differs from the official {ds.name} test: base size {seg.base_size} "
                f"(official {official.base_size}), crop {seg.crop_size[0]}x{seg.crop_size[1]} "
                f"(official {official.crop_size[0]}x{official.crop_size[1]})."
            )
    elif task == "landmarks":
        lm = ds.landmarks
    elif task == "detection":
        det = detection or detection_protocol(ds)
        official = ds.detection
        assert official is not None
        if tuple(det.max_size) != tuple(official.max_size):
            all_notes.append(
                f"Protocol differs from the official {ds.name} test: images are resized to fit "
                f"{det.max_size[0]}x{det.max_size[1]} (official "
                f"{official.max_size[0]}x{official.max_size[1]})."
            )
        all_notes += [
            "labels: index into `labels` (0 = background, never emitted); label_ids gives the "
            "dataset category id.",
            "inputs: `image` = RGB pixels of the image resized to fit max_size (mmcv imrescale), "
            "padded bottom/right to a multiple of size_divisor (the official padding is the mean "
            "pixel, i.e. 0 after normalisation); `image_size` = [valid_h, valid_w] before "
            "padding, to which boxes are clipped.",
        ]
        max_batch_size = 1
    elif task == "face_detection":
        face = face_detection
        all_notes.append(
            "inputs: `image` = RGB pixels 0..255 of the image (or a tile of it) letterboxed into "
            "the input square, centred, padded with 0; outputs: the raw SSD tensors, decoded by "
            "the gateway with the protocol's anchors, box_scale, score_threshold and NMS.")
    else:
        raise NotImplementedError(f"build_metadata does not handle task {task!r} yet")
    common = dict(
        name=name,
        arch=arch,
        dataset=ds.name,
        labels=list(ds.labels),
        palette=list(ds.palette) if ds.palette is not None else None,
        label_ids=list(ds.label_ids) if ds.label_ids is not None else None,
        flip_pairs=list(ds.flip_pairs),
        normalization=normalization or ds.normalization,
        align_corners=bool(align_corners),
        inputs=inputs,
        outputs=outputs,
        max_batch_size=int(max_batch_size),
        weights=weights,
        export=export,
        notes=all_notes,
    )
    if seg is not None:
        return SegmentationMetadata(segmentation=seg, **common)
    if lm is not None:
        return LandmarkMetadata(landmarks=lm, **common)
    if face is not None:
        return FaceDetectionMetadata(face_detection=face, **common)
    return DetectionMetadata(detection=det, **common)


def tier_metadata(
    base: ModelMetadata,
    *,
    name: str,
    precision: str,
    engine: str,
    calibration: str | None = None,
    deltas: TierDeltas | None = None,
    note: str | None = None,
) -> ModelMetadata:
    """The metadata of a precision tier made from the FP32 entry ``base``: the same contract
    (tensor specs stay FP32), its own name, the tier's precision block, and a note."""
    info = PrecisionInfo(precision=precision, engine=engine,  # type: ignore[arg-type]
                         base_model=base.name, calibration=calibration, deltas=deltas)
    notes = [*base.notes, note] if note else list(base.notes)
    return base.model_copy(update={"name": name, "precision": info, "notes": notes})
