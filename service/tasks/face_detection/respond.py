"""Face-detection answers: the faces with scores and keypoints, and an overlay."""

from __future__ import annotations

import numpy as np

from service.contract import FaceDetectionMetadata
from service.imaging.draw import faces_overlay
from service.tasks.common import JSON
from service.tasks.face_detection.merge import Faces
from service.tasks.face_detection.plan import FaceDetectionPlan, FaceDetectionRequest
from service.tasks.face_detection.schemas import DetectedFace, FacesResponse
from service.tasks.schemas import EncodedImage


def detected_faces(found: Faces) -> list[DetectedFace]:
    """The answer's faces (coordinates rounded to 1e-3 px)."""
    return [DetectedFace(index=i, box=[round(float(v), 3) for v in box],
                         score=round(float(score), 6),
                         keypoints=[[round(float(x), 3), round(float(y), 3)] for x, y in kp])
            for i, (box, score, kp) in enumerate(zip(found.boxes, found.scores, found.keypoints))]


def respond(image: np.ndarray, meta: FaceDetectionMetadata, req: FaceDetectionRequest,
            plan: FaceDetectionPlan, found: Faces, media: str = JSON) -> FacesResponse:
    """The JSON answer (the only media type of this task)."""
    height, width = image.shape[:2]
    opts = req.options
    faces = detected_faces(found)
    overlay = None
    if opts.overlay:
        data = faces_overlay(image, [(f.box, f"face {f.score:.2f}") for f in faces],
                             [np.asarray(f.keypoints) for f in faces], fmt=opts.overlay_format)
        overlay = EncodedImage.of(opts.overlay_format, data)
    return FacesResponse(
        **FacesResponse.head(meta, width, height),
        keypoint_names=list(meta.face_detection.keypoints),
        options={"score_threshold": req.score_threshold, "max_faces": req.max_faces,
                 "tiles": list(req.tiles), "passes": plan.n_passes,
                 "input_size": list(plan.input_size), "nms": meta.face_detection.nms,
                 "nms_iou": meta.face_detection.nms_iou},
        faces=faces, overlay=overlay)
