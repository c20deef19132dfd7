"""Facial-landmark answers: per face the crop used and its points, with an optional overlay."""

from __future__ import annotations

import numpy as np

from service.contract import LandmarkMetadata
from service.imaging.draw import faces_overlay, landmarks_overlay
from service.tasks.common import JSON
from service.tasks.face_detection.respond import detected_faces
from service.tasks.landmarks.merge import Landmarks
from service.tasks.landmarks.plan import LandmarkPlan, LandmarkRequest
from service.tasks.landmarks.schemas import FaceResult, LandmarksResponse
from service.tasks.schemas import EncodedImage, ModelUsed


def respond(image: np.ndarray, meta: LandmarkMetadata, req: LandmarkRequest, plan: LandmarkPlan,
            found: Landmarks, media: str = JSON) -> LandmarksResponse:
    """The JSON answer (the only media type of this task)."""
    height, width = image.shape[:2]
    opts, faces = req.options, req.faces
    points, conf = found.points, found.confidence
    detections = detected_faces(req.detected) if req.detected is not None else None
    overlay = None
    if opts.overlay and detections is not None:  # /detect-style: detected boxes, scores, points
        data = faces_overlay(image, [(d.box, f"face {d.score:.2f}") for d in detections],
                             points, fmt=opts.overlay_format)
        overlay = EncodedImage.of(opts.overlay_format, data)
    elif opts.overlay:
        # What the client sent: its box (not the enlarged crop square), the square of a
        # centre + scale face; nothing for the whole image.
        boxes = [None if not faces else faces[i].box if faces[i].box is not None else f.square()
                 for i, f in enumerate(plan.faces)]
        data = landmarks_overlay(image, boxes, points, names=meta.labels, fmt=opts.overlay_format)
        overlay = EncodedImage.of(opts.overlay_format, data)
    scores = np.clip(conf, 0.0, 1.0)

    def box(i: int) -> list[float] | None:
        if detections is not None:
            return list(detections[i].box)
        return list(faces[i].box) if faces and faces[i].box is not None else None

    face_results = [
        FaceResult(
            index=i,
            box=box(i),
            center=[float(face.center[0]), float(face.center[1])],
            scale=float(face.scale),
            crop_box=face.square(),
            landmarks=[[round(float(x), 4), round(float(y), 4)] for x, y in points[i]],
            confidence=[round(float(c), 6) for c in conf[i]],
            mean_confidence=round(float(np.mean(conf[i])), 6) if conf.shape[1] else 0.0,
            scores=[round(float(c), 6) for c in scores[i]],
            score=round(float(np.mean(scores[i])), 6) if conf.shape[1] else 0.0,
            keypoints=[round(float(v), 4) for (x, y), c in zip(points[i], scores[i])
                       for v in (x, y, c)] if opts.coco_keypoints else None,
            detection=detections[i] if detections is not None else None,
        )
        for i, face in enumerate(plan.faces)
    ]
    return LandmarksResponse(
        **LandmarksResponse.head(meta, width, height),
        labels=list(meta.labels),
        faces_source=req.source,
        face_model=ModelUsed.of(req.face_model) if req.face_model is not None else None,
        options={
            "flip": req.flip,
            "box_enlarge": req.box_enlarge,
            "contrast_stretch": opts.contrast_stretch,
            "overlay": opts.overlay,
            "input_size": list(plan.input_size),
            **({"min_face_score": req.face_request.score_threshold,
                "max_faces": req.face_request.max_faces,
                "face_tiles": list(req.face_request.tiles)}
               if req.face_request is not None else {}),
            "heatmap_size": list(found.heatmap_size),
        },
        faces=face_results,
        overlay=overlay,
    )
