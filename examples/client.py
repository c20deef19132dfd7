"""The Python client (``pip install ./client``) on all three tasks of a running gateway.

    python examples/client.py street.jpg face.jpg                  # gateway on localhost:8000
    python examples/client.py --url http://gw:8000 --api-key KEY street.jpg face.jpg

Prints the label map's classes, the landmarks of the face image and the top detections.
"""

from __future__ import annotations

import argparse

import numpy as np

from hrnet_client import Client


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("street", help="an image for segmentation and detection")
    p.add_argument("face", help="an image of a face (the whole image is the face)")
    p.add_argument("--url", default="http://localhost:8000", help="gateway URL")
    p.add_argument("--detect-url", help="gateway serving the detection model (default: --url)")
    p.add_argument("--api-key", help="API key (gateways with HRNET_API_KEYS)")
    args = p.parse_args()

    with Client(args.url, api_key=args.api_key) as client:
        labels = client.label_map(args.street)  # H x W class indices (raw binary answer)
        seg = client.segment(args.street)  # the JSON answer: classes and fractions
        names = seg.labels
        print(f"label map {labels.shape[1]}x{labels.shape[0]} from {seg.model.name}"
              f"{' (RANDOM WEIGHTS)' if seg.random_init else ''}:")
        for c in seg.classes[:5]:
            print(f"  {c.name:<15} {100 * c.fraction:5.1f}%  (label id {c.label_id})")
        assert int(np.max(labels)) < len(names)
        lm = client.landmarks(args.face)
        face = lm.faces[0]
        print(f"{len(face.landmarks)} landmarks from {lm.model.name}; first {lm.labels[0]} at "
              f"({face.landmarks[0][0]:.1f}, {face.landmarks[0][1]:.1f}), mean peak "
              f"{face.confidence.mean():.3f}")
    with Client(args.detect_url or args.url, api_key=args.api_key) as client:
        det = client.detect(args.street, score_threshold=0.3)
        print(f"{len(det.detections)} detections from {det.model.name}:")
        for d in det.detections[:5]:
            x, y, w, h = d.bbox
            print(f"  {d.label:<15} {d.score:.2f}  x={x:.0f} y={y:.0f} w={w:.0f} h={h:.0f}")


if __name__ == "__main__":
    main()
