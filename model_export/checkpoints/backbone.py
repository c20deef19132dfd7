"""Which HRNetV2 backbone a state dict holds, read from the shapes of its official-named tensors."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from model_export.nets.hrnet import HRNET_CONFIGS


def _count(keys: list[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def guess_backbone(sd: Mapping[str, Tensor]) -> tuple[dict[str, Any], str | None]:
    """Backbone shape facts (width, layer1 blocks and width, modules and blocks per stage) of
    backbone tensors under their official names, and the matching backbone name of
    :data:`~model_export.nets.hrnet.HRNET_CONFIGS` (None when no config matches); ``({}, None)``
    when the tensors are not an HRNetV2 backbone."""
    keys = list(sd)
    try:
        facts: dict[str, Any] = {
            "width": int(sd["transition1.0.0.weight"].shape[0]),
            "layer1_blocks": _count(keys, r"layer1\.(\d+)\.conv1\.weight$"),
            "layer1_width": int(sd["layer1.0.conv1.weight"].shape[0]),
            "modules": tuple(_count(keys, rf"stage{s}\.(\d+)\.") for s in (2, 3, 4)),
            "blocks": tuple(_count(keys, rf"stage{s}\.0\.branches\.0\.(\d+)\.conv1\.weight$")
                            for s in (2, 3, 4)),
        }
    except (KeyError, IndexError):
        return {}, None
    for name, cfg in HRNET_CONFIGS.items():
        stages = (cfg.stage2, cfg.stage3, cfg.stage4)
        if (cfg.stage1.num_blocks[0] == facts["layer1_blocks"]
                and cfg.stage1.num_channels[0] == facts["layer1_width"]
                and cfg.stage2.num_channels[0] == facts["width"]
                and tuple(s.num_modules for s in stages) == facts["modules"]
                and tuple(s.num_blocks[0] for s in stages) == facts["blocks"]):
            return facts, name
    return facts, None
