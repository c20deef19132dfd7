"""Talk to Triton directly over gRPC, without the gateway: what any client needs to know.

The tensors of the HRNet models in the repository (docs/deployment.md, "Talking to Triton
directly"):

* input ``image``: FP32, ``[N, 3, H, W]``, RGB, plain pixel values 0..255 (the graph normalises);
  segmentation models accept any ``H, W``; landmark models take ``256 x 256`` face crops;
* segmentation output ``logits``: FP32 ``[N, classes, ceil(H/4), ceil(W/4)]`` (raw logits, 1/4 res);
* landmark output ``heatmaps``: FP32 ``[N, landmarks, 64, 64]``;
* detection (Faster R-CNN, ``max_batch_size`` 1) takes *two* inputs: ``image`` ``[1, 3, H, W]``,
  the image resized to fit ``max_size`` (mmcv rule) and padded bottom/right to a multiple of 32
  with the mean pixel, and ``image_size`` INT64 ``[1, 2]`` = the valid ``(h, w)`` before padding;
  it returns ``boxes`` FP32 ``[1, K, 4]`` (``x1, y1, x2, y2`` in network-input pixels; legacy models
  use inclusive corners), ``scores`` FP32 ``[1, K]`` (descending) and ``labels`` INT64 ``[1, K]``
  (indices into the metadata's ``labels``: 1..80 for COCO; ``label_ids`` maps them to category ids).

The model's labels and protocol travel in its config (``parameters["hrnet_metadata"]``, JSON).
This script sends one image and prints the label histogram (segmentation: argmax of the logits at
1/4 resolution, one pass, no multi-scale), the landmarks (a square crop of the whole image,
argmax + quarter-pixel refinement, in image pixels) or the top detections (class names, scores and
boxes in original-image pixels, continuous frame: the top-left pixel covers ``[0,1] x [0,1]``).
The gateway does the full official procedure; this is the minimal client.

    python examples/grpc_client.py --url localhost:8001 --model seg_cityscapes photo.jpg
    python examples/grpc_client.py --url localhost:8001 --model face_300w face.jpg
    python examples/grpc_client.py --url localhost:8001 --model hrnetv2p_w18_faster_rcnn_coco street.jpg --top 5

Needs only numpy, Pillow and ``tritonclient[grpc]`` (OpenCV, when installed, makes the detection
resize bit-exact with the official ``mmcv.imrescale``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import np_to_triton_dtype

INPUT = "image"
SIZE_INPUT = "image_size"


def load_rgb(path: str | None) -> np.ndarray:
    """An RGB uint8 image from ``path``; without a path, scikit-image's astronaut photo."""
    if path is None:
        from skimage import data  # optional: only for the demo image

        return np.asarray(data.astronaut())
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def model_metadata(client: grpcclient.InferenceServerClient, model: str) -> dict[str, Any]:
    """The ``hrnet_metadata`` JSON of ``model``'s Triton config."""
    config = client.get_model_config(model, as_json=True)["config"]
    text = config.get("parameters", {}).get("hrnet_metadata", {}).get("string_value")
    if not text:
        raise SystemExit(f"model {model!r} has no hrnet_metadata parameter: not an HRNet export")
    return json.loads(text)


def segmentation_input(rgb: np.ndarray, long_side: int) -> np.ndarray:
    """``[1, 3, H, W]`` FP32 pixels, the long side resized to ``long_side`` (bilinear)."""
    h, w = rgb.shape[:2]
    ratio = long_side / max(h, w)
    size = (max(1, int(w * ratio + 0.5)), max(1, int(h * ratio + 0.5)))
    resized = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR), dtype=np.float32)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None])


def face_input(rgb: np.ndarray, size: int = 256) -> tuple[np.ndarray, float, float, float]:
    """The whole image as one square face crop: ``([1, 3, size, size], side, left, top)``.

    The square (side ``max(H, W)``) is centred on the image and zero-padded, as the official crop
    of centre ``(W/2, H/2)`` and scale ``max(W, H)/200``.
    """
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.zeros((side, side, 3), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top:top + h, left:left + w] = rgb
    crop = np.asarray(Image.fromarray(canvas).resize((size, size), Image.BILINEAR), dtype=np.float32)
    # Image coordinates of the square's top-left corner (continuous frame, pixel centres at +0.5).
    pixels = np.ascontiguousarray(crop.transpose(2, 0, 1)[None])
    return pixels, float(side), w / 2 - side / 2, h / 2 - side / 2


def decode_heatmaps(heatmaps: np.ndarray, side: float, left: float, top: float) -> np.ndarray:
    """``[K, 64, 64]`` heatmaps -> ``[K, 2]`` image coordinates (argmax + quarter-pixel shift)."""
    k, hh, hw = heatmaps.shape
    flat = heatmaps.reshape(k, -1).argmax(1)
    ys, xs = np.divmod(flat, hw)
    coords = np.stack([xs, ys], 1).astype(np.float64)
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if 0 < x < hw - 1 and 0 < y < hh - 1:
            hm = heatmaps[i]
            coords[i, 0] += 0.25 * np.sign(hm[y, x + 1] - hm[y, x - 1])
            coords[i, 1] += 0.25 * np.sign(hm[y + 1, x] - hm[y - 1, x])
    # Heatmap cell i covers [i, i+1) of the 64-grid; its centre is i + 0.5.
    return np.stack([(coords[:, 0] + 0.5) * side / hw + left, (coords[:, 1] + 0.5) * side / hh + top], 1)


def rescale_size(h: int, w: int, max_size: tuple[int, int]) -> tuple[int, int, float]:
    """mmcv ``imrescale``: the largest scale with long side <= ``max(max_size)`` and short side
    <= ``min(max_size)``; new sizes ``int(x * scale + 0.5)``. Returns ``(new_h, new_w, scale)``."""
    long_max, short_max = max(max_size), min(max_size)
    scale = min(long_max / max(h, w), short_max / min(h, w))
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5)), scale


def resize_bilinear(rgb: np.ndarray, h: int, w: int, use_cv2: bool = True) -> np.ndarray:
    """Bilinear resize of uint8 ``rgb`` to ``h x w`` as ``cv2.resize(..., INTER_LINEAR)`` (what mmcv
    uses). Without OpenCV: the same half-pixel geometry in float numpy, which can differ from
    OpenCV's fixed-point arithmetic by one grey level. (Pillow's bilinear is not used: it
    antialiases when shrinking, unlike OpenCV.)"""
    if use_cv2:
        try:
            import cv2
        except ImportError:
            pass
        else:
            return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)

    def taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)

    y0, y1, fy = taps(rgb.shape[0], h)
    x0, x1, fx = taps(rgb.shape[1], w)
    img = rgb.astype(np.float32)
    rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def detection_input(
    rgb: np.ndarray, meta: dict[str, Any], max_size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The official test input: ``(image [1, 3, H', W'], image_size [1, 2] int64, (sx, sy))``.

    The image is resized to fit ``max_size`` (default: the model's, e.g. 1333 x 800) by the mmcv
    rule and padded bottom/right to a multiple of ``size_divisor`` (32) with the mean pixel (0 after
    the graph's normalisation, as the official padding). ``(sx, sy)`` divides network-input
    coordinates back to original pixels: one float for legacy (mmdet v0.x) models, per axis else.
    """
    proto = meta["detection"]
    h, w = rgb.shape[:2]
    nh, nw, scale = rescale_size(h, w, tuple(max_size or proto["max_size"]))
    resized = resize_bilinear(rgb, nh, nw)
    divisor = max(1, int(proto.get("size_divisor", 32)))
    ph, pw = -(-nh // divisor) * divisor, -(-nw // divisor) * divisor
    norm = meta["normalization"]
    mean = np.asarray(norm["mean"], np.float32) * np.float32(norm["pixel_scale"])
    pixels = np.empty((1, 3, ph, pw), np.float32)
    pixels[:] = mean.reshape(1, 3, 1, 1)
    pixels[0, :, :nh, :nw] = resized.transpose(2, 0, 1)
    legacy = proto.get("box_convention", "legacy_plus_one") == "legacy_plus_one"
    scale_xy = (scale, scale) if legacy else (nw / w, nh / h)
    return pixels, np.array([[nh, nw]], np.int64), scale_xy


def boxes_to_original(
    boxes: np.ndarray, image_size: tuple[int, int], scale_xy: tuple[float, float], legacy: bool,
    width: int, height: int,
) -> np.ndarray:
    """``[K, 4]`` network-input boxes -> original-image pixels, continuous frame.

    As the official test: clip to the valid (resized) image, divide by the scale. Legacy models'
    inclusive ``x2, y2`` then get ``+1`` (so ``x2 - x1`` is the COCO width either way). Finally
    clipped to the original image.
    """
    nh, nw = image_size
    off = 1.0 if legacy else 0.0
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, nw - off) / scale_xy[0]
    b[:, 1::2] = np.clip(b[:, 1::2], 0, nh - off) / scale_xy[1]
    if legacy:
        b[:, 2:4] += 1.0
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height)
    return b


def infer(
    client: grpcclient.InferenceServerClient, model: str, inputs: dict[str, np.ndarray],
    outputs: list[str],
) -> dict[str, np.ndarray]:
    """One inference: the named arrays in (dtype from numpy: FP32, INT64...), the named outputs out."""
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(np.ascontiguousarray(array))
        tensors.append(tensor)
    result = client.infer(model, tensors, outputs=[grpcclient.InferRequestedOutput(n) for n in outputs],
                          client_timeout=60.0)
    return {name: result.as_numpy(name) for name in outputs}


def detections(
    meta: dict[str, Any], boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, top: int
) -> list[dict[str, Any]]:
    """The ``top`` best detections (the graph sorts by score) with class names and COCO ids."""
    names, ids = meta["labels"], meta.get("label_ids")
    out = []
    for box, score, label in list(zip(boxes, scores, labels, strict=True))[:top]:
        i = int(label)
        out.append({
            "label": names[i] if 0 <= i < len(names) else str(i),
            "label_index": i,
            "category_id": int(ids[i]) if ids and 0 <= i < len(ids) else None,
            "score": round(float(score), 6),
            "box": [round(float(v), 3) for v in box],
        })
    return out


def run(url: str, model: str, image: str | None = None, long_side: int | None = None,
        top: int = 10, max_size: tuple[int, int] | None = None) -> dict[str, Any]:
    """Run ``image`` through ``model`` on the Triton at ``url``; returns what :func:`main` prints."""
    rgb = load_rgb(image)
    with grpcclient.InferenceServerClient(url) as client:
        if not client.is_model_ready(model):
            raise SystemExit(f"model {model!r} is not ready on {url}")
        meta = model_metadata(client, model)
        output = meta["outputs"][0]["name"]
        if meta["task"] == "segmentation":
            side = long_side or meta["segmentation"]["base_size"]
            pixels = segmentation_input(rgb, side)
            logits = infer(client, model, {INPUT: pixels}, [output])[output]
            labels = logits[0].argmax(0)
            counts = np.bincount(labels.ravel(), minlength=len(meta["labels"]))
            total = int(counts.sum())
            histogram = {
                meta["labels"][i]: round(float(c) / total, 4) for i, c in enumerate(counts) if c
            }
            return {"model": model, "task": "segmentation", "input_shape": list(pixels.shape),
                    "logits_shape": list(logits.shape), "histogram": histogram}
        if meta["task"] == "landmarks":
            size = tuple(meta["landmarks"]["input_size"])
            pixels, side, left, top_ = face_input(rgb, size[0])
            heatmaps = infer(client, model, {INPUT: pixels}, [output])[output]
            points = decode_heatmaps(heatmaps[0], side, left, top_)
            return {"model": model, "task": "landmarks", "input_shape": list(pixels.shape),
                    "heatmaps_shape": list(heatmaps.shape),
                    "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in points]}
        if meta["task"] == "detection":
            pixels, size, scale_xy = detection_input(rgb, meta, max_size)
            feeds = {INPUT: pixels}
            if any(spec["name"] == SIZE_INPUT for spec in meta["inputs"]):  # older exports lack it
                feeds[SIZE_INPUT] = size
            out = infer(client, model, feeds, ["boxes", "scores", "labels"])
            legacy = meta["detection"].get("box_convention", "legacy_plus_one") == "legacy_plus_one"
            height, width = rgb.shape[:2]
            boxes = boxes_to_original(out["boxes"][0], (int(size[0, 0]), int(size[0, 1])), scale_xy,
                                      legacy, width, height)
            return {"model": model, "task": "detection", "input_shape": list(pixels.shape),
                    "image_size": size[0].tolist(), "original_size": [height, width],
                    "num_detections": int(out["scores"].shape[1]),
                    "detections": detections(meta, boxes, out["scores"][0], out["labels"][0], top)}
        raise SystemExit(f"task {meta['task']!r} is not handled by this example")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: print the result as JSON and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?", help="image file (default: scikit-image's astronaut)")
    parser.add_argument("--url", default="localhost:8001", help="Triton gRPC address host:port")
    parser.add_argument("--model", default="seg_cityscapes", help="model name in the repository")
    parser.add_argument("--long-side", type=int, help="segmentation: resize the long side to this "
                        "(default: the model's base size)")
    parser.add_argument("--top", type=int, default=10, help="detection: how many detections to print")
    parser.add_argument("--max-size", type=int, nargs=2, metavar=("LONG", "SHORT"),
                        help="detection: resize limits (default: the model's, e.g. 1333 800)")
    args = parser.parse_args(argv)
    result = run(args.url, args.model, args.image, args.long_side, args.top,
                 tuple(args.max_size) if args.max_size else None)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
