"""The HRNetV2 backbone, written so the official state dicts load as-is.

Module names follow HRNet/HRNet-Semantic-Segmentation ``lib/models/seg_hrnet.py`` (and the face
repository's identical backbone): ``conv1 bn1 conv2 bn2 layer1 transition1 stage2 transition2 stage3
transition3 stage4``; blocks name their layers ``conv1/bn1/conv2/bn2(/conv3/bn3)/downsample``; each
``HighResolutionModule`` holds ``branches`` and ``fuse_layers``. The configs are the official YAML
``MODEL.EXTRA`` settings.

Three ways to bring a lower-resolution branch up inside a fuse layer (``fuse_upsample``):

* ``"bilinear"`` (official segmentation / face code): 1x1 conv + BN, then bilinear interpolation to
  the target branch's exact size in ``forward``.
* ``"nearest"`` (HRNet-Object-Detection): a parameter-free ``nn.Upsample(scale_factor=2**(j-i),
  mode="nearest")`` at index 2 of ``fuse_layers.i.j``; the input must be a multiple of 32.
* ``"bilinear_scale"`` (OpenMMLab's HRNet in MMSegmentation / MMPose): bilinear upsampling by the
  factor ``2**(j-i)`` first, then (MMSegmentation) a bilinear resize to the target size when the
  two differ. Equal to ``"bilinear"`` whenever the input is a multiple of 32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FuseUpsample = Literal["bilinear", "nearest", "bilinear_scale"]
FUSE_UPSAMPLE_MODES: tuple[str, ...] = ("bilinear", "nearest", "bilinear_scale")

# pytorch-v1.1 trains with 0.01; it has no effect at inference.
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class StageConfig:
    """One stage of the official ``MODEL.EXTRA`` config."""

    num_modules: int
    num_branches: int
    block: Literal["BASIC", "BOTTLENECK"]
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]


@dataclass(frozen=True)
class HRNetConfig:
    """A whole backbone: ``stage1`` builds ``layer1``; ``stage2..4`` the multi-resolution stages."""

    name: str
    stage1: StageConfig
    stage2: StageConfig
    stage3: StageConfig
    stage4: StageConfig

    @property
    def width(self) -> int:
        """C, the channel count of the 1/4-resolution branch."""
        return self.stage4.num_channels[0]

    @property
    def branch_channels(self) -> tuple[int, ...]:
        """Output channels of the four branches (strides 4, 8, 16, 32)."""
        exp = _EXPANSION[self.stage4.block]
        return tuple(c * exp for c in self.stage4.num_channels)

    @property
    def head_channels(self) -> int:
        """Channels of the concatenated branches that the heads see (15C for BASIC blocks)."""
        return sum(self.branch_channels)


_EXPANSION = {"BASIC": 1, "BOTTLENECK": 4}


def _standard(name: str, c: int) -> HRNetConfig:
    """The W18/W48 pattern: layer1 4x64 bottlenecks; stages of 1/4/3 modules with 4 blocks."""
    return HRNetConfig(
        name=name,
        stage1=StageConfig(1, 1, "BOTTLENECK", (4,), (64,)),
        stage2=StageConfig(1, 2, "BASIC", (4, 4), (c, 2 * c)),
        stage3=StageConfig(4, 3, "BASIC", (4, 4, 4), (c, 2 * c, 4 * c)),
        stage4=StageConfig(3, 4, "BASIC", (4, 4, 4, 4), (c, 2 * c, 4 * c, 8 * c)),
    )


#: Backbone configs by registry name (official ``experiments/*.yaml`` values).
HRNET_CONFIGS: dict[str, HRNetConfig] = {
    "hrnetv2_w18_small_v1": HRNetConfig(
        name="hrnetv2_w18_small_v1",
        stage1=StageConfig(1, 1, "BOTTLENECK", (1,), (32,)),
        stage2=StageConfig(1, 2, "BASIC", (2, 2), (16, 32)),
        stage3=StageConfig(1, 3, "BASIC", (2, 2, 2), (16, 32, 64)),
        stage4=StageConfig(1, 4, "BASIC", (2, 2, 2, 2), (16, 32, 64, 128)),
    ),
    "hrnetv2_w18_small_v2": HRNetConfig(
        name="hrnetv2_w18_small_v2",
        stage1=StageConfig(1, 1, "BOTTLENECK", (2,), (64,)),
        stage2=StageConfig(1, 2, "BASIC", (2, 2), (18, 36)),
        stage3=StageConfig(3, 3, "BASIC", (2, 2, 2), (18, 36, 72)),
        stage4=StageConfig(2, 4, "BASIC", (2, 2, 2, 2), (18, 36, 72, 144)),
    ),
    **{f"hrnetv2_w{c}": _standard(f"hrnetv2_w{c}", c) for c in (18, 30, 32, 40, 44, 48, 64)},
}


def _conv3x3(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=3, stride=stride, padding=1, bias=False)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual connection (official ``BasicBlock``)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = _bn(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = _bn(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4) bottleneck with a residual connection (official ``Bottleneck``)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = _bn(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


_BLOCKS: dict[str, type[BasicBlock] | type[Bottleneck]] = {
    "BASIC": BasicBlock,
    "BOTTLENECK": Bottleneck,
}


def _make_layer(block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int,
                blocks: int, stride: int = 1) -> nn.Sequential:
    """A chain of blocks; the first gets a 1x1 conv + BN ``downsample`` when shapes change."""
    downsample = None
    if stride != 1 or inplanes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes * block.expansion, kernel_size=1, stride=stride,
                      bias=False),
            _bn(planes * block.expansion),
        )
    layers: list[nn.Module] = [block(inplanes, planes, stride, downsample)]
    for _ in range(1, blocks):
        layers.append(block(planes * block.expansion, planes))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Parallel branches followed by the all-to-all fusion (official ``HighResolutionModule``)."""

    def __init__(self, num_branches: int, block: type[BasicBlock] | type[Bottleneck],
                 num_blocks: tuple[int, ...], num_inchannels: list[int],
                 num_channels: tuple[int, ...], *, fuse_upsample: FuseUpsample = "bilinear",
                 align_corners: bool = False) -> None:
        super().__init__()
        if not (num_branches == len(num_blocks) == len(num_channels) == len(num_inchannels)):
            raise ValueError("num_branches, num_blocks, num_channels and num_inchannels disagree")
        self.num_branches = num_branches
        self.fuse_upsample = fuse_upsample
        self.align_corners = align_corners
        branches = []
        self.num_inchannels = list(num_inchannels)
        for i in range(num_branches):
            branches.append(_make_layer(block, self.num_inchannels[i], num_channels[i],
                                        num_blocks[i]))
            self.num_inchannels[i] = num_channels[i] * block.expansion
        self.branches = nn.ModuleList(branches)
        self.fuse_layers = self._make_fuse_layers()
        self.relu = nn.ReLU(inplace=True)

    def _make_fuse_layers(self) -> nn.ModuleList | None:
        if self.num_branches == 1:
            return None
        chans = self.num_inchannels
        fuse_layers = []
        for i in range(self.num_branches):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:
                    up: list[nn.Module] = [nn.Conv2d(chans[j], chans[i], 1, 1, 0, bias=False),
                                           _bn(chans[i])]
                    if self.fuse_upsample == "nearest":
                        up.append(nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"))
                    row.append(nn.Sequential(*up))
                elif j == i:
                    row.append(None)
                else:
                    # i - j stride-2 3x3 convs; ReLU between them, none after the last.
                    steps: list[nn.Module] = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            steps.append(nn.Sequential(
                                nn.Conv2d(chans[j], chans[i], 3, 2, 1, bias=False),
                                _bn(chans[i])))
                        else:
                            steps.append(nn.Sequential(
                                nn.Conv2d(chans[j], chans[j], 3, 2, 1, bias=False),
                                _bn(chans[j]),
                                nn.ReLU(inplace=True)))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        return nn.ModuleList(fuse_layers)

    def _upsample(self, y: Tensor, target: Tensor, factor: int) -> Tensor:
        """Bring a 1x1-projected lower branch ``y`` to ``target``'s resolution."""
        size = (target.shape[-2], target.shape[-1])
        if self.fuse_upsample == "nearest":
            return y  # the nn.Upsample inside the fuse layer already did it
        if self.fuse_upsample == "bilinear_scale":
            # MMSegmentation always resizes afterwards; a same-size bilinear resize is exact.
            y = F.interpolate(y, size=(y.shape[-2] * factor, y.shape[-1] * factor),
                              mode="bilinear", align_corners=self.align_corners)
        return F.interpolate(y, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        x = [branch(xi) for branch, xi in zip(self.branches, x, strict=True)]
        if self.fuse_layers is None:
            return x
        out = []
        for i, row in enumerate(self.fuse_layers):
            # Summation order as in the official code: branch 0 first, then j = 1, 2, ...
            y = x[0] if i == 0 else row[0](x[0])
            for j in range(1, self.num_branches):
                if j == i:
                    y = y + x[j]
                elif j > i:
                    y = y + self._upsample(row[j](x[j]), x[i], 2 ** (j - i))
                else:
                    y = y + row[j](x[j])
            out.append(self.relu(y))
        return out


class HighResolutionNet(nn.Module):
    """HRNetV2 backbone with official module names; ``forward`` returns the four branch outputs.

    Args:
        cfg: the backbone config (see :data:`HRNET_CONFIGS`).
        fuse_upsample: how fuse layers bring lower branches up (module docstring).
        align_corners: bilinear convention of the fuse layers (and of the heads built on top).
    """

    def __init__(self, cfg: HRNetConfig, *, fuse_upsample: FuseUpsample = "bilinear",
                 align_corners: bool = False) -> None:
        super().__init__()
        if fuse_upsample not in FUSE_UPSAMPLE_MODES:
            raise ValueError(f"fuse_upsample must be one of {FUSE_UPSAMPLE_MODES}, "
                             f"got {fuse_upsample!r}")
        self.cfg = cfg
        self.fuse_upsample: FuseUpsample = fuse_upsample
        self.align_corners = align_corners

        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = _bn(64)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn2 = _bn(64)
        self.relu = nn.ReLU(inplace=True)

        s1 = cfg.stage1
        block1 = _BLOCKS[s1.block]
        self.layer1 = _make_layer(block1, 64, s1.num_channels[0], s1.num_blocks[0])
        pre = [s1.num_channels[0] * block1.expansion]

        self.transition1, self.stage2, pre = self._transition_and_stage(pre, cfg.stage2)
        self.transition2, self.stage3, pre = self._transition_and_stage(pre, cfg.stage3)
        self.transition3, self.stage4, pre = self._transition_and_stage(pre, cfg.stage4)
        self.out_channels: tuple[int, ...] = tuple(pre)

    def _transition_and_stage(self, pre: list[int], stage: StageConfig
                              ) -> tuple[nn.ModuleList, nn.Sequential, list[int]]:
        block = _BLOCKS[stage.block]
        cur = [c * block.expansion for c in stage.num_channels]
        transition = _make_transition(pre, cur)
        modules = []
        inch = cur
        for _ in range(stage.num_modules):
            module = HighResolutionModule(stage.num_branches, block, stage.num_blocks, inch,
                                          stage.num_channels, fuse_upsample=self.fuse_upsample,
                                          align_corners=self.align_corners)
            inch = module.num_inchannels
            modules.append(module)
        return transition, nn.Sequential(*modules), list(inch)

    @staticmethod
    def _apply_transition(transition: nn.ModuleList, xs: list[Tensor]) -> list[Tensor]:
        # New branches start from the previous stage's lowest-resolution output.
        out = []
        for i, t in enumerate(transition):
            if i < len(xs):
                out.append(xs[i] if t is None else t(xs[i]))
            else:
                out.append(t(xs[-1]))
        return out

    def forward_branches(self, x: Tensor) -> list[Tensor]:
        """The four branch outputs at strides 4, 8, 16, 32 (channels ``out_channels``)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        xs = self.stage2(self._apply_transition(self.transition1, [x]))
        xs = self.stage3(self._apply_transition(self.transition2, xs))
        return self.stage4(self._apply_transition(self.transition3, xs))

    def forward(self, x: Tensor) -> list[Tensor]:  # noqa: D102 - same as forward_branches
        return self.forward_branches(x)


def _make_transition(pre: list[int], cur: list[int]) -> nn.ModuleList:
    """Official ``_make_transition_layer``: adapt existing branches, grow new ones by stride 2."""
    layers: list[nn.Module | None] = []
    for i, out_c in enumerate(cur):
        if i < len(pre):
            if out_c != pre[i]:
                layers.append(nn.Sequential(
                    nn.Conv2d(pre[i], out_c, 3, 1, 1, bias=False), _bn(out_c),
                    nn.ReLU(inplace=True)))
            else:
                layers.append(None)
        else:
            steps = []
            for j in range(i + 1 - len(pre)):
                inc = pre[-1]
                outc = out_c if j == i - len(pre) else inc
                steps.append(nn.Sequential(
                    nn.Conv2d(inc, outc, 3, 2, 1, bias=False), _bn(outc), nn.ReLU(inplace=True)))
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


def concat_branches(feats: list[Tensor], *, align_corners: bool = False) -> Tensor:
    """Bilinearly upsample branches 1..3 to branch 0's size and concatenate (official heads)."""
    size = (feats[0].shape[-2], feats[0].shape[-1])
    ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=align_corners)
                        for f in feats[1:]]
    return torch.cat(ups, dim=1)
