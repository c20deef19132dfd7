"""Talk to Triton directly over gRPC, without the gateway: what any client needs to know.

Every HRNet model in the repository takes one input and returns one output (README, "Exported
graph"):

* input ``image``: FP32, ``[N, 3, H, W]``, RGB, plain pixel values 0..255 (the graph normalises);
  segmentation models accept any ``H, W``; landmark models take ``256 x 256`` face crops;
* segmentation output ``logits``: FP32 ``[N, classes, ceil(H/4), ceil(W/4)]`` (raw logits, 1/4 res);
* landmark output ``heatmaps``: FP32 ``[N, landmarks, 64, 64]``.

The model's labels and protocol travel in its config (``parameters["hrnet_metadata"]``, JSON).
This script sends one image and prints the label histogram (segmentation: argmax of the logits at
1/4 resolution, one pass, no multi-scale) or the landmarks (a square crop of the whole image,
argmax + quarter-pixel refinement, in image pixels). The gateway does the full official
procedure; this is the minimal client.

    python examples/grpc_client.py --url localhost:8001 --model seg_cityscapes photo.jpg
    python examples/grpc_client.py --url localhost:8001 --model face_300w face.jpg

Needs only numpy, Pillow and ``tritonclient[grpc]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image

INPUT = "image"


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


def infer(
    client: grpcclient.InferenceServerClient, model: str, pixels: np.ndarray, output: str
) -> np.ndarray:
    """One inference: ``pixels`` in, the named output out."""
    tensor = grpcclient.InferInput(INPUT, list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(output)],
                          client_timeout=60.0)
    return result.as_numpy(output)


def run(url: str, model: str, image: str | None = None, long_side: int | None = None) -> dict[str, Any]:
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
            logits = infer(client, model, pixels, output)
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
            pixels, side, left, top = face_input(rgb, size[0])
            heatmaps = infer(client, model, pixels, output)
            points = decode_heatmaps(heatmaps[0], side, left, top)
            return {"model": model, "task": "landmarks", "input_shape": list(pixels.shape),
                    "heatmaps_shape": list(heatmaps.shape),
                    "landmarks": [[round(float(x), 3), round(float(y), 3)] for x, y in points]}
        raise SystemExit(f"task {meta['task']!r} is not handled by this example")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI: print the result as JSON and return it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?", help="image file (default: scikit-image's astronaut)")
    parser.add_argument("--url", default="localhost:8001", help="Triton gRPC address host:port")
    parser.add_argument("--model", default="seg_cityscapes", help="model name in the repository")
    parser.add_argument("--long-side", type=int, help="segmentation: resize the long side to this "
                        "(default: the model's base size)")
    args = parser.parse_args(argv)
    result = run(args.url, args.model, args.image, args.long_side)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
