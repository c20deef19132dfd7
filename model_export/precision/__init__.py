"""Precision tiers: lower-precision entries of one checkpoint beside its FP32 entry, each measured
against FP32 at export.

* :mod:`.tiers`: the options (``--precision``, ``--tensorrt-precision``, engines, calibration,
  thresholds) and entry names (``<name>_bf16``, ``<name>_int8``, ``<name>_trt``, ``<name>_trt_int8``);
* :mod:`.images`: the photos that calibrate and measure (scikit-image's, or a user's folder), as
  graph inputs per task;
* :mod:`.quantize`: static INT8 Q/DQ graphs with ONNX Runtime's quantiser;
* :mod:`.deltas`: the figures that compare a tier with FP32, per task;
* :mod:`.build`: makes, measures and picks the engine of every CPU tier; TensorRT FP16/INT8 plans.
"""
