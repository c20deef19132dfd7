"""Writes perf_analyzer's ``--input-data`` JSON for a detection entry: ``image`` (FP32 pixels of
a photo resized by the model's rule and padded to its size divisor, base64) and the INT64
``image_size`` (the valid h, w before padding), which random data cannot stand in for.

    python examples/perf_analyzer_input.py triton_repo/hrnetv2p_w18_faster_rcnn_coco street.jpg \
        -o detect_input.json
    perf_analyzer -m hrnetv2p_w18_faster_rcnn_coco -i grpc -u localhost:8001 \
        --input-data detect_input.json --concurrency-range 1:4

Needs numpy and Pillow (no torch); reads the entry's ``hrnet.json`` (or give ``--max-size``).
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import numpy as np
from PIL import Image


def rescale_size(h: int, w: int, max_size: tuple[int, int]) -> tuple[int, int]:
    """mmcv ``imrescale``'s size (as ``service.contract.rescale_size``)."""
    long_max, short_max = max(max_size), min(max_size)
    scale = min(long_max / max(h, w), short_max / min(h, w))
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("entry", type=Path, help="the detection entry's folder (holds hrnet.json)")
    p.add_argument("image", type=Path, help="a photo")
    p.add_argument("-o", "--output", type=Path, default=Path("detect_input.json"))
    p.add_argument("--max-size", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="resize limits (default: the entry's detection.max_size)")
    args = p.parse_args()
    meta = json.loads((args.entry / "hrnet.json").read_text())
    det = meta["detection"]
    max_size = tuple(args.max_size or det["max_size"])
    divisor = int(det.get("size_divisor", 32))
    mean = np.array(meta["normalization"]["mean"], np.float32) * float(
        meta["normalization"].get("pixel_scale", 1.0))
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    h, w = rescale_size(rgb.shape[0], rgb.shape[1], max_size)
    resized = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), np.float32)
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    chw = np.empty((3, ph, pw), np.float32)
    chw[:] = mean.reshape(3, 1, 1)  # the official padding: the mean pixel
    chw[:, :h, :w] = resized.transpose(2, 0, 1)
    data = {"data": [{
        "image": {"b64": base64.b64encode(chw.tobytes()).decode(), "shape": [3, ph, pw]},
        "image_size": {"content": [h, w], "shape": [2]},
    }]}
    args.output.write_text(json.dumps(data))
    print(f"{args.output}: image [3, {ph}, {pw}] FP32, image_size [{h}, {w}] INT64")


if __name__ == "__main__":
    main()
