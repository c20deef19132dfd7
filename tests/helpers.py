"""Helpers shared by every test folder (plain functions and classes; fixtures live in conftest.py).

Sections: images and HTTP (gateway tests), then checkpoint files (model_export tests).
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Images and HTTP
# --------------------------------------------------------------------------------------------



# (section boundary: keep the blank lines above and below, two people edit the two sections)



# --------------------------------------------------------------------------------------------
# Checkpoint files (model_export tests)
# --------------------------------------------------------------------------------------------
# Checkpoint files as the official repositories and OpenMMLab write them, for the loader tests.
# torch is imported inside the helpers: gateway tests importing this module never pay for it.

from pathlib import Path  # noqa: E402 - this section's own imports
from typing import Any  # noqa: E402


def save_checkpoint(obj: Any, path: Path) -> Path:
    """``torch.save(obj, path)``; returns ``path``."""
    import torch

    torch.save(obj, path)
    return path


def official_seg_checkpoint(sd: dict[str, Any], *, num_batches_tracked: bool = True
                            ) -> dict[str, Any]:
    """A segmentation state dict laid out as HRNet-Semantic-Segmentation releases are: keys
    under ``model.`` (the training wrapper) and the criterion's class weights under ``loss.``;
    without ``num_batches_tracked`` entries as in the oldest releases."""
    import torch

    out: dict[str, Any] = {f"model.{k}": v for k, v in sd.items()
                           if num_batches_tracked or not k.endswith("num_batches_tracked")}
    out["loss.criterion.weight"] = torch.rand(19)
    return out


def to_checkpoint(model: Any, fmt: str) -> dict[str, Any]:
    """An ``HRNetFasterRCNN`` as a checkpoint of detection format ``fmt`` (``hrnet-det``,
    ``mmdet-v1`` or ``mmdet-v2``): the inverse of the loader's mapping."""
    import torch

    from model_export.checkpoints.detection import FORMAT_CONVENTION

    if fmt not in FORMAT_CONVENTION:
        raise ValueError(f"format must be one of {sorted(FORMAT_CONVENTION)}")
    sd: dict[str, Any] = {}
    head = "roi_head.bbox_head." if fmt == "mmdet-v2" else "bbox_head."
    neck_red = "neck.reduction_conv.0." if fmt == "hrnet-det" else "neck.reduction_conv.conv."
    for k, v in model.state_dict().items():
        if k.startswith("backbone.body."):
            sd["backbone." + k[len("backbone.body."):]] = v
        elif k.startswith("backbone.neck.reduction_conv.0."):
            sd[neck_red + k.rsplit(".", 1)[1]] = v
        elif k.startswith("backbone.neck.fpn_conv."):
            i, name = k.split(".")[-2:]
            sd[f"neck.fpn_convs.{i}.conv.{name}" if fmt == "mmdet-v2"
               else f"neck.fpn_conv.{i}.{name}"] = v
        else:
            for src, dst in (("rpn.head.conv.0.0.", "rpn_head.rpn_conv."),
                             ("rpn.head.cls_logits.", "rpn_head.rpn_cls."),
                             ("rpn.head.bbox_pred.", "rpn_head.rpn_reg."),
                             ("roi_heads.box_head.fc6.", head + "shared_fcs.0."),
                             ("roi_heads.box_head.fc7.", head + "shared_fcs.1."),
                             ("roi_heads.box_predictor.cls_score.", head + "fc_cls."),
                             ("roi_heads.box_predictor.bbox_pred.", head + "fc_reg.")):
                if k.startswith(src):
                    if fmt == "mmdet-v2" and dst.endswith("fc_cls."):
                        v = torch.cat([v[1:], v[:1]])  # background last
                    elif fmt == "mmdet-v2" and dst.endswith("fc_reg."):
                        v = v[4:]  # no background row
                    sd[dst + k[len(src):]] = v
                    break
            else:
                raise AssertionError(f"unmapped model key {k}")
    sd = {k: v.clone() for k, v in sd.items()}
    if fmt != "hrnet-det":  # later versions drop nothing; v0.6 files may lack the counters
        return {"meta": {"mmdet_version": "2.28.0" if fmt == "mmdet-v2" else "1.2.0"},
                "state_dict": sd}
    return {"meta": {"mmdet_version": "0.6.0"},
            "state_dict": {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}}
