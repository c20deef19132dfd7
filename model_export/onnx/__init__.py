"""ONNX graphs with the ONNX Runtime parity check: HRNet segmentation / landmark graphs
(:mod:`.hrnet`) and HRNetV2p Faster R-CNN graphs (:mod:`.detection`), both checked on the real
photographs of :mod:`.photos`."""
