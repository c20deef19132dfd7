"""Class colours: the PASCAL-VOC palette (what the official segmentation saver writes) and the
full 256-entry table a label-map PNG carries. Torch-free: ``model_export`` builds dataset palettes
from it too, so there is one definition."""

from __future__ import annotations

import numpy as np


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """The PASCAL-VOC bit-interleaved palette (``get_palette`` of the official saver), ``n`` colours."""
    out: list[tuple[int, int, int]] = []
    for j in range(n):
        lab, rgb, i = j, [0, 0, 0], 0
        while lab:
            for c in range(3):
                rgb[c] |= ((lab >> c) & 1) << (7 - i)
            i += 1
            lab >>= 3
        out.append((rgb[0], rgb[1], rgb[2]))
    return out


def full_palette(palette: list[tuple[int, int, int]] | None) -> np.ndarray:
    """A (256, 3) uint8 palette: the dataset's colours first, VOC colours for the rest."""
    pal = np.array(voc_palette(256), np.uint8)
    if palette:
        k = min(256, len(palette))
        pal[:k] = np.asarray(palette[:k], np.uint8)
    return pal


def distinct_colour(i: int) -> tuple[int, int, int]:
    """Colour ``i`` of an endless sequence of well-separated, saturated colours (hues stepped by
    the golden angle, two brightness levels), for classes without a dataset palette."""
    import colorsys

    h = (i * 0.618033988749895) % 1.0
    v = 1.0 if i % 2 == 0 else 0.8
    r, g, b = colorsys.hsv_to_rgb(h, 0.85, v)
    return int(r * 255), int(g * 255), int(b * 255)
