"""The input shapes a model's passes can take, as TensorRT optimisation profiles (min, opt, max).

Both TensorRT paths read it: the plans ``model_export`` builds and the TensorRT execution
provider of the embedded backend (its engine cache is built for these shapes, so requests within
them never rebuild). From the serving protocol:

* landmarks: fixed input size, batch 1..max;
* segmentation, 'base' windows (PASCAL-Context, LIP): every pass is exactly the crop size (small
  images are padded to it), so min = opt = max = crop;
* segmentation, 'cityscapes' windows: scale <= 1 runs the whole resized image (long side up to
  ``base_size``), larger scales run crop-size windows; so max = base x base, opt = crop.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.contract import LandmarkMetadata, ModelMetadata, SegmentationMetadata

# The smallest side a whole-image pass may have (scale 0.5 of a small image); below, HRNet's four
# stride-2 stages leave nothing to work with.
MIN_SIDE = 32


@dataclass(frozen=True)
class TrtProfile:
    """One optimisation profile of the ``image`` input: NCHW shapes."""

    input_name: str
    min_shape: tuple[int, int, int, int]
    opt_shape: tuple[int, int, int, int]
    max_shape: tuple[int, int, int, int]

    def __post_init__(self) -> None:
        for lo, mid, hi in zip(self.min_shape, self.opt_shape, self.max_shape):
            if not 0 < lo <= mid <= hi:
                raise ValueError(f"profile shapes must satisfy 0 < min <= opt <= max: {self}")


    def as_ort_options(self) -> dict[str, str]:
        """The TensorRT execution provider's profile options (``name:NxCxHxW`` strings)."""
        dims = lambda s: "x".join(str(int(v)) for v in s)  # noqa: E731
        return {"trt_profile_min_shapes": f"{self.input_name}:{dims(self.min_shape)}",
                "trt_profile_opt_shapes": f"{self.input_name}:{dims(self.opt_shape)}",
                "trt_profile_max_shapes": f"{self.input_name}:{dims(self.max_shape)}"}


def compute_profile(
    metadata: ModelMetadata,
    *,
    opt_batch: int | None = None,
    max_hw: tuple[int, int] | None = None,
) -> TrtProfile:
    """The optimisation profile implied by the model's serving protocol (see module doc)."""
    max_b = max(1, metadata.max_batch_size)
    opt_b = min(max_b, opt_batch or max(1, max_b // 2))
    name = metadata.inputs[0].name
    if isinstance(metadata, LandmarkMetadata):
        h, w = metadata.landmarks.input_size
        return TrtProfile(name, (1, 3, h, w), (opt_b, 3, h, w), (max_b, 3, h, w))
    if not isinstance(metadata, SegmentationMetadata):
        raise ValueError(f"no TensorRT profile rule for task {metadata.task!r}")
    seg = metadata.segmentation
    ch, cw = seg.crop_size
    if seg.window == "base":
        lo = hi = (ch, cw)
    else:
        lo = (MIN_SIDE, MIN_SIDE)
        side = max(seg.base_size, ch, cw)
        hi = (side, side)
    if max_hw is not None:
        # Never below the crop: Triton's warm-up sample has the crop size and must fit the profile.
        hi = (max(int(max_hw[0]), lo[0], ch), max(int(max_hw[1]), lo[1], cw))
    opt = (min(max(ch, lo[0]), hi[0]), min(max(cw, lo[1]), hi[1]))
    return TrtProfile(name, (1, 3, *lo), (opt_b, 3, *opt), (max_b, 3, *hi))
