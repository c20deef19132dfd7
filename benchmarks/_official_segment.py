"""The official HRNet-Semantic-Segmentation test procedure for Cityscapes, in PyTorch, as its own
process: what bench_segment.py compares the gateway's time and memory with.

    .venv/bin/python benchmarks/_official_segment.py --repo DIR --model NAME --image PNG
        --scales 0.5,0.75,1,1.25,1.5,1.75 [--flip] [--threads 2] [--labels OUT.npy]

The network is rebuilt by ``model_export`` with the random-init seed of the exported entry, so it
holds the very weights of the entry's ``model.onnx``. The procedure follows the official code
(``lib/datasets/base_dataset.py`` / ``cityscapes.py`` of the ``pytorch-v1.1`` branch; see
``shared/reference/README.md``): the normalised float image is resized per scale with OpenCV,
scale <= 1 runs whole, larger scales slide crop-size windows (stride = crop, shifted inside,
never padded) averaged by a count, each forward upsamples its logits to its input, flips are
averaged before ``exp``, every scale's scores are resized to the original size and summed, and the
label is the argmax. Prints one JSON line: seconds, the process's RSS at rest (model loaded,
one warm-up forward) and its peak.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class OfficialCityscapes:
    """``multi_scale_inference`` of the official Cityscapes dataset class, on the CPU."""

    def __init__(self, model, num_classes: int, base_size: int, crop: tuple[int, int],
                 align_corners: bool) -> None:
        self.model, self.num_classes = model, num_classes
        self.base_size, self.crop, self.ac = base_size, crop, align_corners

    def _resize_scale(self, image: np.ndarray, scale: float) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        long_size = int(self.base_size * scale + 0.5)
        if h > w:
            new_h, new_w = long_size, int(w * long_size / h + 0.5)
        else:
            new_w, new_h = long_size, int(h * long_size / w + 0.5)
        return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)

    def inference(self, x, flip: bool):
        import torch
        import torch.nn.functional as F

        size = x.shape[-2:]
        pred = F.interpolate(self.model(x), size=size, mode="bilinear", align_corners=self.ac)
        if flip:
            out = F.interpolate(self.model(torch.flip(x, [3])), size=size, mode="bilinear",
                                align_corners=self.ac)
            pred = (pred + torch.flip(out, [3])) * 0.5
        return pred.exp()

    def predict(self, rgb: np.ndarray, scales: list[float], flip: bool) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        mean = np.array([0.485, 0.456, 0.406], np.float32)
        std = np.array([0.229, 0.224, 0.225], np.float32)
        image = (rgb.astype(np.float32) / 255.0 - mean) / std
        ori_h, ori_w = image.shape[:2]
        ch, cw = self.crop
        final = torch.zeros(1, self.num_classes, ori_h, ori_w)
        with torch.no_grad():
            for scale in scales:
                img = self._resize_scale(image, scale)
                h, w = img.shape[:2]
                if scale <= 1.0:
                    x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None]
                    preds = self.inference(x, flip)[:, :, :h, :w]
                else:
                    rows = int(math.ceil((h - ch) / ch)) + 1
                    cols = int(math.ceil((w - cw) / cw)) + 1
                    preds = torch.zeros(1, self.num_classes, h, w)
                    count = torch.zeros(1, 1, h, w)
                    for r in range(rows):
                        for c in range(cols):
                            y1, x1 = min(r * ch + ch, h), min(c * cw + cw, w)
                            y0, x0 = max(y1 - ch, 0), max(x1 - cw, 0)
                            crop = np.ascontiguousarray(img[y0:y1, x0:x1].transpose(2, 0, 1))
                            pred = self.inference(torch.from_numpy(crop)[None], flip)
                            preds[:, :, y0:y1, x0:x1] += pred[:, :, : y1 - y0, : x1 - x0]
                            count[:, :, y0:y1, x0:x1] += 1
                    preds = preds / count
                final += F.interpolate(preds, (ori_h, ori_w), mode="bilinear",
                                       align_corners=self.ac)
        return final[0].argmax(0).numpy().astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--scales", default="1")
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--labels", type=Path)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from model_export.archs import build_model
    from model_export.random_init import DEMO_SEED, randomize_for_demo
    from service.contract import ModelMetadata

    torch.set_num_threads(args.threads)
    meta = ModelMetadata.from_json((args.repo / args.model / "hrnet.json").read_text())
    seed = DEMO_SEED
    for note in meta.notes:  # "Random-init seed N (...)": the seed the export used
        if note.startswith("Random-init seed "):
            seed = int(note.split()[2])
    model = build_model("segmentation", meta.arch, len(meta.labels),
                        align_corners=meta.align_corners)
    randomize_for_demo(model, seed)
    model.eval()
    proto = meta.segmentation
    official = OfficialCityscapes(model, len(meta.labels), proto.base_size,
                                  tuple(proto.crop_size), meta.align_corners)
    rgb = np.asarray(Image.open(args.image).convert("RGB"))
    official.predict(rgb[:64, :128], [0.5], False)  # warm-up
    rest, _ = _rss_mb()
    scales = [float(s) for s in args.scales.split(",")]
    t0 = time.perf_counter()
    labels = official.predict(rgb, scales, args.flip)
    seconds = time.perf_counter() - t0
    _, peak = _rss_mb()
    if args.labels:
        np.save(args.labels, labels)
    print(json.dumps({"seconds": seconds, "rest_mb": rest, "peak_mb": peak}))


if __name__ == "__main__":
    main()
