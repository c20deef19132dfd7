"""The torch networks: the HRNetV2 backbone (:mod:`.hrnet`), its segmentation and landmark heads
(:mod:`.heads`) and HRNetV2p Faster R-CNN (:mod:`.detection`)."""
