"""The exporter (needs torch): HRNetV2 segmentation / landmark networks and HRNetV2p Faster R-CNN
detectors to ONNX and Triton model repository entries, with an ONNX Runtime parity check.

``python -m model_export`` (:mod:`.cli`) or :func:`model_export.pipeline.export_model`.
"""
