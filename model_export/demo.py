"""Random-init demo models: deterministic weights with spatially varying outputs, and the demo repo.

A network with PyTorch's default initialisation and untouched BatchNorm statistics (mean 0, var 1)
produces near-constant, tiny logits: every pixel gets the same label, which makes a useless demo and
weak tests. :func:`randomize_for_demo` gives a network deterministic weights (from ``seed``),
re-estimates its BatchNorm statistics on real photographs (so activations are well scaled and
follow image content), perturbs the BN affine parameters, and scales the final layer so outputs
have a useful spread. The result still knows nothing: it is random-init, and recorded as such.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # a runtime import would be circular
    from model_export.pipeline import ExportRequest

DEMO_SEED = 20240601
# Calibration photos are resized to this (h, w); small keeps it fast, real content keeps it varied.
_CALIBRATION_SIZE = (128, 128)


def _calibration_batch(size: tuple[int, int], mirror: bool) -> torch.Tensor:
    from model_export.onnx.hrnet import normalise
    from model_export.onnx.photos import parity_images, pixel_batch

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


# --------------------------------------------------------------------------------------------
# The demo repository
# --------------------------------------------------------------------------------------------

DEMO_CITYSCAPES_NOTE = (
    "Demo protocol: Cityscapes base size reduced from 2048 to 1024 and crop from 1024x2048 to "
    "512x1024 so CPU demos run quickly."
)


def _seg_demo(repo: Path) -> "ExportRequest":
    from model_export.pipeline import ExportRequest

    return ExportRequest(
        task="segmentation",
        arch="hrnetv2_w18_small_v1",
        dataset="cityscapes",
        name="hrnet_w18s1_cityscapes",
        repo=repo,
        random_init=True,
        base_size=1024,
        crop_size=(512, 1024),
        notes=[DEMO_CITYSCAPES_NOTE],
        instance_kind="cpu",
    )


def _face_demo(repo: Path) -> "ExportRequest":
    from model_export.pipeline import ExportRequest

    return ExportRequest(
        task="landmarks",
        arch="hrnetv2_w18",
        dataset="300w",
        name="hrnet_w18_300w",
        repo=repo,
        random_init=True,
        instance_kind="cpu",
    )


DEMO_DETECTION_MAX_SIZE = (800, 480)
DEMO_DETECTION_RPN = {"rpn_pre_nms_top_n": 1000, "rpn_post_nms_top_n": 300}
DEMO_DETECTION_NOTE = (
    "Demo protocol: images resized to fit 800x480 instead of 1333x800, and the RPN keeps 1000 "
    "proposals per level / 300 in total instead of 2000 / 2000, so CPU demos run quickly."
)


def _det_demo(repo: Path) -> "ExportRequest":
    from model_export.pipeline import ExportRequest

    return ExportRequest(
        task="detection",
        arch="hrnetv2p_w18",
        dataset="coco",
        name="hrnetv2p_w18_faster_rcnn_coco",
        repo=repo,
        random_init=True,
        max_size=DEMO_DETECTION_MAX_SIZE,
        detection_overrides=dict(DEMO_DETECTION_RPN),
        max_batch_size=1,
        notes=[DEMO_DETECTION_NOTE],
        instance_kind="cpu",
    )


#: Demo entries by task (``python -m model_export demo --tasks ...``).
DEMO_FACTORIES: dict[str, Callable[[Path], "ExportRequest"]] = {
    "segmentation": _seg_demo,
    "landmarks": _face_demo,
    "detection": _det_demo,
}


def demo_requests(repo: str | Path, tasks: list[str] | None = None) -> list["ExportRequest"]:
    """The export requests of the demo repository (all registered tasks unless ``tasks``)."""
    repo = Path(repo)
    names = tasks or list(DEMO_FACTORIES)
    unknown = [t for t in names if t not in DEMO_FACTORIES]
    if unknown:
        raise ValueError(f"no demo for tasks {unknown}; known: {', '.join(DEMO_FACTORIES)}")
    return [DEMO_FACTORIES[t](repo) for t in names]
