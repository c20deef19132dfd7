"""Reading a TensorFlow Lite flatbuffer (``.tflite``) into plain Python: its operators, tensors and
constant data, with the schema of the ``tflite`` package (the file's own format, parsed; no
TensorFlow and no code from the file).

:func:`read_tflite` gives a :class:`TFLiteGraph` (the first subgraph): every operator with its
builtin name, inputs, outputs and the options the converter needs; every tensor with its shape,
type and constant value (FP16 constants kept as FP16: the model's ``DEQUANTIZE`` operators make
them FP32, exactly). :func:`inspect_tflite` says what a file is, like ``inspect_checkpoint`` does
for PyTorch checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_export.checkpoints.matching import CheckpointError, CheckpointInfo
from model_export.checkpoints.reading import file_sha256

_NUMPY_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
_PADDING = {0: "SAME", 1: "VALID"}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 3: "RELU6"}


@dataclass(frozen=True)
class Tensor:
    """One tensor of the graph (``data`` is set for constants)."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: Any
    data: np.ndarray | None = None


@dataclass(frozen=True)
class Operator:
    """One operator: builtin name, tensor indices (-1: optional input absent), options."""

    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TFLiteGraph:
    """The first subgraph of a ``.tflite`` file."""

    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    version: int

    def ops(self) -> dict[str, int]:
        """Operator counts by name."""
        out: dict[str, int] = {}
        for o in self.operators:
            out[o.op] = out.get(o.op, 0) + 1
        return out


def _options(op: Any, name: str) -> dict[str, Any]:
    import tflite

    table = op.BuiltinOptions()
    if table is None:
        return {}

    def of(cls: Any) -> Any:
        o = cls()
        o.Init(table.Bytes, table.Pos)
        return o

    if name == "CONV_2D":
        o = of(tflite.Conv2DOptions)
        return {"padding": _PADDING[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN")}
    if name == "DEPTHWISE_CONV_2D":
        o = of(tflite.DepthwiseConv2DOptions)
        return {"padding": _PADDING[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
                "dilation": (o.DilationHFactor(), o.DilationWFactor()),
                "multiplier": o.DepthMultiplier(),
                "activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN")}
    if name in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        o = of(tflite.Pool2DOptions)
        return {"padding": _PADDING[o.Padding()], "stride": (o.StrideH(), o.StrideW()),
                "filter": (o.FilterHeight(), o.FilterWidth()),
                "activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN")}
    if name == "ADD":
        o = of(tflite.AddOptions)
        return {"activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN")}
    if name == "CONCATENATION":
        o = of(tflite.ConcatenationOptions)
        return {"axis": o.Axis(),
                "activation": _ACTIVATIONS.get(o.FusedActivationFunction(), "UNKNOWN")}
    if name == "RESIZE_BILINEAR":
        o = of(tflite.ResizeBilinearOptions)
        return {"align_corners": bool(o.AlignCorners()),
                "half_pixel_centers": bool(o.HalfPixelCenters())}
    if name == "RESHAPE":
        o = of(tflite.ReshapeOptions)
        return {"new_shape": tuple(int(v) for v in o.NewShapeAsNumpy())} if o.NewShapeLength() else {}
    return {}


def is_tflite(path: str | Path) -> bool:
    """True when ``path`` is a file with the TFLite flatbuffer identifier (``TFL3``)."""
    try:
        with open(path, "rb") as f:
            return f.read(8)[4:8] == b"TFL3"
    except OSError:
        return False


def read_tflite(path: str | Path) -> TFLiteGraph:
    """Parse ``path``; CheckpointError for a file that is not a readable TFLite model."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    buf = path.read_bytes()
    if buf[4:8] != b"TFL3":
        raise CheckpointError(f"not a TensorFlow Lite model: {path} (no TFL3 identifier)")
    try:
        model = tflite.Model.GetRootAsModel(buf, 0)
        if model.SubgraphsLength() != 1:
            raise CheckpointError(f"{path} has {model.SubgraphsLength()} subgraphs; one expected")
        g = model.Subgraphs(0)
        names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
        tensors = []
        for i in range(g.TensorsLength()):
            t = g.Tensors(i)
            dtype = _NUMPY_TYPES.get(t.Type())
            shape = tuple(int(v) for v in t.ShapeAsNumpy()) if t.ShapeLength() else ()
            data = None
            raw = model.Buffers(t.Buffer()).DataAsNumpy() if t.Buffer() else 0
            if not isinstance(raw, int) and raw.size:
                if dtype is None:
                    raise CheckpointError(f"{path}: tensor {t.Name().decode()} has type "
                                          f"{t.Type()}, which the converter does not read")
                data = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
            tensors.append(Tensor(i, t.Name().decode(), shape, dtype, data))
        ops = []
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            ops.append(Operator(name, tuple(int(v) for v in op.InputsAsNumpy()),
                                tuple(int(v) for v in op.OutputsAsNumpy()), _options(op, name)))
        return TFLiteGraph(tensors, ops, tuple(int(v) for v in g.InputsAsNumpy()),
                           tuple(int(v) for v in g.OutputsAsNumpy()), int(model.Version()))
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt flatbuffer fails in many ways
        raise CheckpointError(f"cannot parse {path} as a TensorFlow Lite model: {exc}") from exc


def inspect_tflite(path: str | Path, arch: str | None = None) -> CheckpointInfo:
    """What a ``.tflite`` file is: format ``tflite``, task ``face_detection`` (the only TFLite
    models this exporter converts), its operators and constant count; ``arch`` when known."""
    graph = read_tflite(path)
    consts = sum(t.data is not None for t in graph.tensors)
    ops = ", ".join(f"{k} x{v}" for k, v in sorted(graph.ops().items()))
    shapes = [graph.tensors[i].shape for i in graph.inputs]
    return CheckpointInfo(
        format="tflite", origin="mediapipe", task="face_detection", arch=arch,
        num_outputs=1, num_tensors=consts, align_corners=False, fuse_upsample="bilinear",
        notes=(f"TFLite schema v{graph.version}; input {shapes}; operators: {ops}",),
        path=str(path), sha256=file_sha256(path))
