"""Overlays read by people (service/imaging/draw.py): per-class colours, captions on a filled
background, a segmentation legend, the client's face box and connected landmark contours."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from service.imaging import draw


def _pixels(data: bytes) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(data)).convert("RGB"))


def _has(img: np.ndarray, colour, region=None) -> int:
    part = img if region is None else img[region]
    return int((part == np.array(colour, np.uint8)).all(-1).sum())


def test_detection_boxes_per_class_colour_and_captions():
    grey = np.full((240, 320, 3), 128, np.uint8)
    boxes = [([20, 60, 120, 200], 1, "person 0.93"), ([180, 80, 300, 220], 2, "bicycle 0.41")]
    out = _pixels(draw.boxes_overlay(grey, boxes, fmt="png"))
    c1, c2 = draw.class_colours(3, None)[1:3]
    assert c1 != c2
    width = draw.line_width(grey.shape)
    # Each outline in its class colour, along the box's left edge.
    assert _has(out, c1, np.s_[60:200, 20:20 + width]) > 100
    assert _has(out, c2, np.s_[80:220, 180:180 + width]) > 100
    # The caption: a filled box of the class colour above the box, with contrasting letters.
    from PIL import ImageDraw

    scratch = ImageDraw.Draw(Image.new("RGB", (4, 4)))
    h = draw.caption_height(scratch, draw.font(draw.text_size(grey.shape)))
    patch = out[60 - h:60, 20:100].astype(int)
    assert _has(patch.astype(np.uint8), c1) > 0.3 * patch.shape[0] * patch.shape[1]
    letters = np.array(draw.text_colour(c1))  # anti-aliased: count pixels close to it
    assert (np.abs(patch - letters).max(-1) < 60).sum() > 20


def test_caption_letters_contrast_with_their_background():
    assert draw.text_colour((255, 255, 0)) == (0, 0, 0)
    assert draw.text_colour((0, 0, 142)) == (255, 255, 255)
    assert draw.font(30).size == 30  # Pillow's scalable built-in font


def test_segmentation_legend_lists_the_classes_present():
    rgb = np.full((200, 300, 3), 200, np.uint8)
    labels = np.zeros((200, 300), np.uint8)
    labels[:, 150:] = 2
    palette = [(128, 64, 128), (244, 35, 232), (70, 70, 70)]
    names = ["road", "sidewalk", "building"]
    with_legend = _pixels(draw.label_overlay(rgb, labels, palette, alpha=0.5, fmt="png",
                                             names=names))
    without = _pixels(draw.label_overlay(rgb, labels, palette, alpha=0.5, fmt="png"))
    # The legend's panel darkens the top-left corner and holds a full-colour swatch per class.
    corner = np.s_[0:40, 0:60]
    assert with_legend[corner].mean() < without[corner].mean() - 40
    assert _has(with_legend, palette[0], corner) > 20 and _has(with_legend, palette[2], corner) > 20
    assert _has(with_legend, palette[1]) == 0  # absent classes are not listed
    # Away from the legend the blend is unchanged.
    np.testing.assert_array_equal(with_legend[150:, 200:], without[150:, 200:])


def test_landmark_overlay_draws_the_sent_box_and_connected_contours():
    rgb = np.zeros((200, 200, 3), np.uint8)
    names = [f"jaw_{i}" for i in range(1, 4)] + [f"right_eye_{i}" for i in range(1, 5)] + ["x"]
    pts = np.array([[40, 100], [100, 160], [160, 100],  # open jaw
                    [80, 60], [100, 50], [120, 60], [100, 70],  # closed eye
                    [10, 10]], float)
    assert draw.point_groups(names) == [([0, 1, 2], False), ([3, 4, 5, 6], True)]
    out = _pixels(draw.landmarks_overlay(rgb, [[30, 40, 170, 180]], [pts], names=names, fmt="png"))
    box_colour, line_colour, dot_colour = (0, 200, 255), (60, 255, 60), (255, 0, 0)
    assert _has(out, box_colour, np.s_[40:180, 30:33]) > 100  # the client's box, left edge
    assert _has(out, line_colour, np.s_[125:135, 65:75]) > 0  # on the jaw segment 0 -> 1
    assert _has(out, line_colour, np.s_[63:68, 87:93]) > 0  # the eye closes: 6 -> 3
    assert _has(out, line_colour, np.s_[95:105, 95:105]) == 0  # jaw is open: no 2 -> 0 line
    assert _has(out, dot_colour, np.s_[5:15, 5:15]) > 0  # an unnumbered point: a dot only
