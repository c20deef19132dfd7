"""Static INT8 quantisation (Q/DQ) with ONNX Runtime's quantiser, calibrated on real images.

* CPU tiers: activations UINT8 (asymmetric), weights INT8 per output channel: the layout ONNX
  Runtime's x86 kernels (VNNI) and OpenVINO run fastest;
* TensorRT tiers: activations and weights INT8 *symmetric* (zero point 0), per-channel weights:
  the explicit Q/DQ form TensorRT builds INT8 engines from.

Ranges: min/max of every activation over the calibration images (``CalibrationMethod.MinMax``).

Detection graphs quantise their backbone (HRNetV2p + HRFPN: nearly all of the arithmetic) and
keep the box arithmetic in FP32: anchors, box decoding, RoIAlign and NMS in INT8 would move
boxes by whole quantisation steps (and OpenVINO refuses a quantised anchor generator).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from model_export.precision.images import Feed


class _Reader:
    """``onnxruntime.quantization.CalibrationDataReader`` over a list of feeds."""

    def __init__(self, feeds: list[Feed]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> Feed | None:
        return next(self._it, None)

    def rewind(self) -> None:  # some quantiser versions call it
        pass


#: Per task, the node-name prefix of what is quantised (None: the whole network).
QUANTISED_NODES: dict[str, str | None] = {"segmentation": None, "landmarks": None,
                                          "detection": "/model/backbone/"}


def quantize_int8(onnx_path: str | Path, out_path: str | Path, feeds: list[Feed], *,
                  symmetric: bool = False, task: str = "segmentation") -> float:
    """Write the Q/DQ INT8 graph of ``onnx_path`` to ``out_path``; returns the seconds it took."""
    from onnxruntime.quantization import (
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static,
    )

    class Reader(_Reader, CalibrationDataReader):
        pass

    if not feeds:
        raise ValueError("INT8 calibration needs at least one image")
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True} if symmetric else {}
    prefix = QUANTISED_NODES.get(task)
    nodes = None
    if prefix is not None:
        import onnx

        graph = onnx.load(str(onnx_path), load_external_data=False).graph
        nodes = [n.name for n in graph.node if n.name.startswith(prefix)]
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs advice through the root logger
    try:
        quantize_static(
            str(onnx_path), str(out_path), Reader(feeds), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
            weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=nodes,
            extra_options=extra)
    finally:
        root.setLevel(level)
    return time.perf_counter() - t0
