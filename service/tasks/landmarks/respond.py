"""Facial-landmark answers: per face the crop used and its points, with an optional overlay."""

from __future__ import annotations

import numpy as np

from service.contract import LandmarkMetadata
from service.imaging.draw import landmarks_overlay
from service.tasks.common import JSON
from service.tasks.landmarks.merge import Landmarks
from service.tasks.landmarks.plan import LandmarkPlan, LandmarkRequest
from service.tasks.landmarks.schemas import FaceResult, LandmarksResponse
from service.tasks.schemas import EncodedImage


def respond(image: np.ndarray, meta: LandmarkMetadata, req: LandmarkRequest, plan: LandmarkPlan,
            found: Landmarks, media: str = JSON) -> LandmarksResponse:
    """The JSON answer (the only media type of this task)."""
    height, width = image.shape[:2]
    opts, faces = req.options, req.faces
    points, conf = found.points, found.confidence
    overlay = None
    if opts.overlay:
        # What the client sent: its box (not the enlarged crop square), the square of a
        # centre + scale face; nothing for the whole image.
        boxes = [None if not faces else faces[i].box if faces[i].box is not None else f.square()
                 for i, f in enumerate(plan.faces)]
        data = landmarks_overlay(image, boxes, points, names=meta.labels, fmt=opts.overlay_format)
        overlay = EncodedImage.of(opts.overlay_format, data)
    scores = np.clip(conf, 0.0, 1.0)
    face_results = [
        FaceResult(
            index=i,
            box=list(faces[i].box) if faces and faces[i].box is not None else None,
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
        )
        for i, face in enumerate(plan.faces)
    ]
    return LandmarksResponse(
        **LandmarksResponse.head(meta, width, height),
        labels=list(meta.labels),
        faces_source="request" if faces else "whole_image",
        options={
            "flip": req.flip,
            "box_enlarge": req.box_enlarge,
            "contrast_stretch": opts.contrast_stretch,
            "overlay": opts.overlay,
            "input_size": list(plan.input_size),
            "heatmap_size": list(found.heatmap_size),
        },
        faces=face_results,
        overlay=overlay,
    )
