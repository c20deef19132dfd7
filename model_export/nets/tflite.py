"""A TensorFlow Lite graph as a PyTorch module: the file's operators run in its order, on its
weights, with PyTorch's kernels (NCHW), so ``torch.onnx.export`` gives the same function as ONNX.

Built for MediaPipe's BlazeFace models, whose operators are all here: ``DEQUANTIZE`` (FP16
constants -> FP32, exact), ``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``ADD``, ``RELU``/``RELU6``,
``PAD``, ``MAX_POOL_2D``, ``RESIZE_BILINEAR`` (half-pixel centres or corner-aligned), ``RESHAPE``
and ``CONCATENATION``. Anything else stops the conversion with the operators listed (no silent
approximation).

Layout: TFLite tensors are NHWC; here 4-D activations are NCHW, and operators whose meaning
depends on the layout translate: ``PAD`` paddings and ``CONCATENATION`` axes are permuted, and a
``RESHAPE`` of a 4-D activation first goes back to NHWC so the element order is the file's.
TensorFlow's ``SAME`` padding (extra row/column at the bottom/right) is explicit padding. The
batch dimension stays dynamic: a ``RESHAPE`` keeps the input's batch instead of the file's 1.

Every constant of the file is a parameter (weights, biases) or a shape/padding operand read at
build time; :meth:`TFLiteNet.unused_constants` lists any that no operator consumed (the strict
matcher's "every tensor used" rule, for a graph).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # annotations only: the checkpoints package imports the arch registry
    from model_export.checkpoints.tflite import Operator, TFLiteGraph

SUPPORTED_OPS = frozenset({
    "DEQUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "RELU", "RELU6", "PAD", "MAX_POOL_2D",
    "RESIZE_BILINEAR", "RESHAPE", "CONCATENATION",
})


class UnsupportedGraph(ValueError):
    """The graph uses an operator (or an option) the converter does not translate."""


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding (before, after) of one axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _activation(name: str, x: Tensor) -> Tensor:
    if name == "NONE":
        return x
    if name == "RELU":
        return F.relu(x)
    if name == "RELU6":
        return F.relu6(x)
    raise UnsupportedGraph(f"fused activation {name}")


class TFLiteNet(nn.Module):
    """Runs a :class:`TFLiteGraph` whose single input is an NHWC float image; ``forward`` takes
    it as NCHW ``[N, C, H, W]`` (normalised as the model expects) and returns the graph's
    outputs in the file's order."""

    def __init__(self, graph: TFLiteGraph) -> None:
        super().__init__()
        unsupported = sorted({o.op for o in graph.operators} - SUPPORTED_OPS)
        if unsupported:
            raise UnsupportedGraph(f"operators not supported by the converter: {unsupported}")
        if len(graph.inputs) != 1:
            raise UnsupportedGraph(f"{len(graph.inputs)} graph inputs; one image expected")
        self.graph = graph
        self.input_shape = graph.tensors[graph.inputs[0]].shape  # NHWC
        self.source_file: Any = None  # the .tflite it came from (set by the exporter)
        self.protocol: Any = None  # its decoding protocol (set by the exporter)
        self._consts: dict[int, np.ndarray] = {}
        self._used: set[int] = set()
        for t in graph.tensors:
            if t.data is not None:
                self._consts[t.index] = t.data
        # DEQUANTIZE of a constant is a constant (FP16 -> FP32 is exact).
        for o in graph.operators:
            if o.op == "DEQUANTIZE" and o.inputs[0] in self._consts:
                self._consts[o.outputs[0]] = self._consts[o.inputs[0]].astype(np.float32)
                self._used.add(o.inputs[0])
        self._steps: list[tuple[Operator, dict[str, Any]]] = []
        self.params = nn.ParameterDict()
        for i, o in enumerate(graph.operators):
            if o.op == "DEQUANTIZE" and o.inputs[0] in self._consts:
                continue
            self._steps.append((o, self._prepare(i, o)))

    # -- build time: weights to parameters, operands to Python values -------------------------

    def _const(self, index: int) -> np.ndarray:
        if index not in self._consts:
            raise UnsupportedGraph(f"tensor {index} ({self.graph.tensors[index].name}) must be "
                                   "a constant")
        self._used.add(index)
        return self._consts[index]

    def _param(self, key: str, value: np.ndarray) -> str:
        self.params[key] = nn.Parameter(torch.from_numpy(np.ascontiguousarray(value, np.float32)),
                                        requires_grad=False)
        return key

    def _prepare(self, i: int, o: Operator) -> dict[str, Any]:
        if o.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w = self._const(o.inputs[1])
            bias = self._const(o.inputs[2]) if len(o.inputs) > 2 and o.inputs[2] >= 0 else None
            if o.op == "CONV_2D":  # [O, kh, kw, I] -> [O, I, kh, kw]
                weight, groups = w.transpose(0, 3, 1, 2), 1
            else:  # [1, kh, kw, C * m] -> [C * m, 1, kh, kw]
                in_c = self.graph.tensors[o.inputs[0]].shape[3]
                weight, groups = w.transpose(3, 0, 1, 2), in_c
            spec = {"weight": self._param(f"op{i}_weight", weight), "groups": groups,
                    "kernel": (w.shape[1], w.shape[2])}
            if bias is not None:
                spec["bias"] = self._param(f"op{i}_bias", bias)
            return spec
        if o.op == "ADD" and any(j in self._consts for j in o.inputs):
            raise UnsupportedGraph("ADD of a constant")
        if o.op == "PAD":
            pads = self._const(o.inputs[1]).astype(int).tolist()  # NHWC [[before, after], ...]
            if len(pads) != 4 or pads[0] != [0, 0]:
                raise UnsupportedGraph(f"PAD {pads}")
            (t, b), (l, r), (c0, c1) = pads[1], pads[2], pads[3]
            return {"pad": (l, r, t, b, c0, c1)}  # F.pad order for NCHW
        if o.op == "RESIZE_BILINEAR":
            size = self._const(o.inputs[1]).astype(int).tolist()
            ac, hp = o.options["align_corners"], o.options["half_pixel_centers"]
            if not ac and not hp:
                raise UnsupportedGraph("RESIZE_BILINEAR with legacy (asymmetric) coordinates")
            return {"size": (int(size[0]), int(size[1])), "align_corners": bool(ac)}
        if o.op == "RESHAPE":
            if len(o.inputs) > 1 and o.inputs[1] >= 0:
                self._const(o.inputs[1])
            return {"shape": self.graph.tensors[o.outputs[0]].shape}
        return {}

    def unused_constants(self) -> list[str]:
        """Names of constant tensors that no operator consumes (should be none)."""
        return [self.graph.tensors[i].name for i in self._consts
                if i not in self._used and i < len(self.graph.tensors)
                and self.graph.tensors[i].data is not None]

    # -- run time ------------------------------------------------------------------------------

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        env: dict[int, Tensor] = {self.graph.inputs[0]: image}
        nchw: dict[int, bool] = {self.graph.inputs[0]: True}  # 4-D activations are NCHW here
        for o, spec in self._steps:
            x = env[o.inputs[0]]
            out = self._run(o, spec, x, env, nchw)
            env[o.outputs[0]] = out
            nchw[o.outputs[0]] = out.dim() == 4
        return tuple(env[i] for i in self.graph.outputs)

    def _run(self, o: Operator, spec: dict[str, Any], x: Tensor, env: dict[int, Tensor],
             nchw: dict[int, bool]) -> Tensor:
        opts = o.options
        if o.op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            (kh, kw), (sh, sw), (dh, dw) = spec["kernel"], opts["stride"], opts["dilation"]
            if opts["padding"] == "SAME":
                t, b = _same_pads(x.shape[2], kh, sh, dh)
                l, r = _same_pads(x.shape[3], kw, sw, dw)
                if t == b and l == r:
                    padding: Any = (t, l)
                else:
                    x, padding = F.pad(x, (l, r, t, b)), 0
            else:
                padding = 0
            bias = self.params[spec["bias"]] if "bias" in spec else None
            y = F.conv2d(x, self.params[spec["weight"]], bias, stride=(sh, sw), padding=padding,
                         dilation=(dh, dw), groups=spec["groups"])
            return _activation(opts["activation"], y)
        if o.op == "ADD":
            return _activation(opts["activation"], x + env[o.inputs[1]])
        if o.op == "RELU":
            return F.relu(x)
        if o.op == "RELU6":
            return F.relu6(x)
        if o.op == "PAD":
            return F.pad(x, spec["pad"])
        if o.op == "MAX_POOL_2D":
            (fh, fw), (sh, sw) = opts["filter"], opts["stride"]
            if opts["padding"] == "SAME":
                t, b = _same_pads(x.shape[2], fh, sh, 1)
                l, r = _same_pads(x.shape[3], fw, sw, 1)
                if t or b or l or r:
                    x = F.pad(x, (l, r, t, b), value=float("-inf"))
            return _activation(opts["activation"], F.max_pool2d(x, (fh, fw), (sh, sw)))
        if o.op == "RESIZE_BILINEAR":
            return F.interpolate(x, size=spec["size"], mode="bilinear",
                                 align_corners=spec["align_corners"])
        if o.op == "RESHAPE":
            if x.dim() == 4 and nchw[o.inputs[0]]:
                x = x.permute(0, 2, 3, 1)  # back to the file's NHWC element order
            shape = spec["shape"]
            return x.reshape(x.shape[0], *shape[1:])
        if o.op == "CONCATENATION":
            parts = [env[j] for j in o.inputs]
            axis = opts["axis"] % parts[0].dim()
            if parts[0].dim() == 4 and nchw[o.inputs[0]]:
                axis = (0, 2, 3, 1)[axis]
            return _activation(opts["activation"], torch.cat(parts, dim=axis))
        if o.op == "DEQUANTIZE":
            return x.float()
        raise UnsupportedGraph(o.op)  # pragma: no cover - filtered in __init__
