"""Random-init weights for tests and demos: deterministic, with outputs that vary across the image.

A network with PyTorch's default initialisation and untouched BatchNorm statistics (mean 0, var 1)
produces near-constant, tiny logits: every pixel gets the same label, which makes a useless demo and
weak tests. :func:`randomize_for_demo` gives a network deterministic weights (from ``seed``),
re-estimates its BatchNorm statistics on real photographs (so activations are well scaled and
follow image content), perturbs the BN affine parameters, and scales the final layer so outputs
have a useful spread. The result still knows nothing: it is random-init, and recorded as such.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from model_export.nets.detection import HRNetFasterRCNN
from model_export.onnx.hrnet import normalise
from model_export.onnx.photos import parity_images, pixel_batch

DEMO_SEED = 20240601
# Calibration photos are resized to this (h, w); small keeps it fast, real content keeps it varied.
_CALIBRATION_SIZE = (128, 128)


def _calibration_batch(size: tuple[int, int], mirror: bool) -> torch.Tensor:
    photos = parity_images()
    pixels, _ = pixel_batch(photos, size, len(photos))
    if mirror:
        pixels = np.concatenate([pixels, pixels[..., ::-1]])
    return torch.from_numpy(normalise(np.ascontiguousarray(pixels)))


def _final_conv(model: nn.Module) -> nn.Conv2d | None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


@torch.no_grad()
def randomize_for_demo(
    model: nn.Module,
    seed: int = DEMO_SEED,
    *,
    calibration_size: tuple[int, int] | None = None,
    output_std: float | None = None,
) -> nn.Module:
    """Deterministically randomise ``model`` in place so its outputs vary across the image.

    Steps (all seeded): Kaiming-normal conv weights and small conv biases; BN affine weight in
    [0.5, 1.5] and bias ~ N(0, 0.2); BN running statistics re-estimated (cumulative average) from
    a forward pass over three scikit-image photos (and their mirror images for segmentation); the final conv scaled
    so outputs have standard deviation ``output_std`` on those photos (default 4 for logits, 1
    for heatmaps, roughly the spread of trained networks). Returns the model in eval
    mode. The same ``seed`` and torch version give the same weights.
    """
    gen = torch.Generator().manual_seed(int(seed))
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
            if m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.05)
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
            m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.2)
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration pass
    size = calibration_size or _CALIBRATION_SIZE
    # Mirrored copies only for segmentation: the landmark backbone (W18) is costly on CPU.
    landmarks = getattr(model, "task", None) == "landmarks"
    batch = _calibration_batch(size, mirror=not landmarks)
    model.train()
    # With one cumulative pass the running statistics equal this batch's, so the train-mode
    # output stands in for the eval-mode one when scaling the final layer (saves a pass).
    out = model(batch)
    model.eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    final = _final_conv(model)
    if output_std is None:
        output_std = 1.0 if landmarks else 4.0
    if final is not None:
        std = float(out.std())
        if std > 0:
            final.weight.mul_(output_std / std)
            if final.bias is not None:
                final.bias.mul_(output_std / std)
    return model


@torch.no_grad()
def make_demo_detector(model: HRNetFasterRCNN, *, seed: int = 0, logit_std: float = 4.0,
                       mask_logit_std: float = 40.0) -> HRNetFasterRCNN:
    """Give a randomly initialised detector confident-enough class scores to emit detections.

    Random heads give near-uniform softmax scores (1/81 < the 0.05 threshold), so nothing would
    come out and parity checks would compare empty sets. Widening the class-logit weights spreads
    the scores so that some classes pass the threshold; outputs remain meaningless.
    """
    gen = torch.Generator().manual_seed(seed)
    predictors = model.roi_heads.box_predictor  # one per cascade stage, or a single predictor
    for pred in (predictors if isinstance(predictors, torch.nn.ModuleList) else [predictors]):
        cls = pred.cls_score
        cls.weight.copy_(torch.randn(cls.weight.shape, generator=gen) * logit_std)
        cls.bias.zero_()
    # Mask heads: random conv_logits give logits near 0 (probabilities ~0.5 everywhere, so the
    # 0.5 threshold would be decided by rounding); widen them so masks have shape.
    for head in getattr(model, "mask_heads", ()):
        logits = head.conv_logits
        logits.weight.copy_(torch.randn(logits.weight.shape, generator=gen) * mask_logit_std)
        logits.bias.zero_()
    return model
