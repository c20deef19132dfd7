"""Official face crop geometry and heatmap decoding (service/landmarks.py).

The decode is checked against a straightforward torch reimplementation of the official
``get_preds`` / ``decode_preds`` / ``transform_pixel`` (written here the way the official code is),
with its ``astype(int)`` removed; the crop against a direct emulation of the official ``crop``
(``scipy.misc.imresize`` = ``bytescale`` + Pillow BILINEAR).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from service.tasks.landmarks.geometry import (
    Face,
    box_to_face,
    crop_face,
    crop_geometry,
    decode_heatmaps,
    flip_back,
    whole_image_face,
)

torch.set_num_threads(1)


# ---------------------------------------------------------------- reference (official, in torch)
def ref_get_preds(scores: torch.Tensor) -> torch.Tensor:
    maxval, idx = torch.max(scores.view(scores.size(0), scores.size(1), -1), 2)
    maxval = maxval.view(scores.size(0), scores.size(1), 1)
    idx = idx.view(scores.size(0), scores.size(1), 1) + 1
    preds = idx.repeat(1, 1, 2).float()
    preds[:, :, 0] = (preds[:, :, 0] - 1) % scores.size(3) + 1
    preds[:, :, 1] = torch.floor((preds[:, :, 1] - 1) / scores.size(3)) + 1
    pred_mask = maxval.gt(0).repeat(1, 1, 2).float()
    return preds * pred_mask


def ref_get_transform(center, scale, output_size):
    h = 200 * scale
    t = np.zeros((3, 3))
    t[0, 0] = float(output_size[1]) / h
    t[1, 1] = float(output_size[0]) / h
    t[0, 2] = output_size[1] * (-float(center[0]) / h + 0.5)
    t[1, 2] = output_size[0] * (-float(center[1]) / h + 0.5)
    t[2, 2] = 1
    return t


def ref_transform_pixel(pt, center, scale, output_size, invert=0, truncate=False):
    t = ref_get_transform(center, scale, output_size)
    if invert:
        t = np.linalg.inv(t)
    new_pt = np.array([pt[0] - 1, pt[1] - 1, 1.0]).T
    new_pt = np.dot(t, new_pt)
    return (new_pt[:2].astype(int) if truncate else new_pt[:2]) + 1


def ref_decode_preds(output: torch.Tensor, center, scale, res, truncate=False) -> torch.Tensor:
    coords = ref_get_preds(output).double()
    for n in range(coords.size(0)):
        for p in range(coords.size(1)):
            hm = output[n][p]
            px = int(math.floor(coords[n][p][0]))
            py = int(math.floor(coords[n][p][1]))
            if (px > 1) and (px < res[0]) and (py > 1) and (py < res[1]):
                diff = torch.Tensor([hm[py - 1][px] - hm[py - 1][px - 2], hm[py][px - 1] - hm[py - 2][px - 1]])
                coords[n][p] += diff.sign().double() * 0.25
    coords += 0.5
    preds = coords.clone()
    for i in range(coords.size(0)):
        for p in range(coords.size(1)):
            preds[i, p] = torch.tensor(
                ref_transform_pixel(coords[i, p].numpy(), center[i], scale[i], res, 1, truncate)
            )
    return preds


def random_faces(rng, n):
    return [Face((float(rng.uniform(50, 450)), float(rng.uniform(50, 450))), float(rng.uniform(0.3, 4.0))) for _ in range(n)]


def peaked_heatmaps(rng, n, k, size=64):
    """Gaussian peaks at sub-pixel positions, some on the border rows/columns (no shift there)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    hm = np.empty((n, k, size, size), np.float32)
    for i in range(n):
        for j in range(k):
            cx, cy = rng.uniform(-0.4, size - 0.6, 2)
            if j % 7 == 0:
                cx = 0.0
            if j % 11 == 0:
                cy = size - 1.0
            hm[i, j] = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 1.5**2))
    return hm


# ---------------------------------------------------------------- decode vs reference
@pytest.mark.parametrize("kind", ["random", "peaked"])
def test_decode_matches_official_without_truncation(kind):
    rng = np.random.default_rng(7 if kind == "random" else 8)
    n, k = 3, 68
    hm = rng.normal(size=(n, k, 64, 64)).astype(np.float32) + 5.0 if kind == "random" else peaked_heatmaps(rng, n, k)
    faces = random_faces(rng, n)
    ours, conf = decode_heatmaps(hm, faces)
    ref = ref_decode_preds(
        torch.from_numpy(hm), [f.center for f in faces], [f.scale for f in faces], [64, 64]
    ).numpy()
    # Ours reports the official value without ``astype(int)`` and without its final ``+ 1``.
    np.testing.assert_allclose(ours, ref - 1.0, atol=1e-4, rtol=0)
    np.testing.assert_allclose(conf, hm.reshape(n, k, -1).max(axis=2), rtol=0, atol=0)
    # And the official integer output is recovered by truncating ours and adding 1.
    official = ref_decode_preds(
        torch.from_numpy(hm), [f.center for f in faces], [f.scale for f in faces], [64, 64], truncate=True
    ).numpy()
    np.testing.assert_array_equal(np.trunc(ours + 1e-9) + 1, official)


def test_quarter_shift_changes_results():
    """The shift is really applied: a peak with a stronger right neighbour moves +0.25 cells."""
    hm = np.zeros((1, 2, 64, 64), np.float32)
    hm[0, 0, 10, 20] = 1.0
    hm[0, 0, 10, 21] = 0.5  # right neighbour larger than the left -> +0.25 in x
    hm[0, 0, 9, 20] = 0.5  # upper neighbour larger -> -0.25 in y
    hm[0, 1, 0, 5] = 1.0  # border row: no shift
    hm[0, 1, 0, 6] = 0.9
    face = Face((128.0, 128.0), 1.28)  # 256 px square, 4 image px per heatmap cell
    pts, _ = decode_heatmaps(hm, [face])
    np.testing.assert_allclose(pts[0, 0], [(20 + 0.5 + 0.25) * 4, (10 + 0.5 - 0.25) * 4])
    np.testing.assert_allclose(pts[0, 1], [(5 + 0.5) * 4, (0 + 0.5) * 4])


def test_nonpositive_heatmaps_official_mask_optional():
    rng = np.random.default_rng(3)
    hm = -np.abs(rng.normal(size=(2, 5, 64, 64)).astype(np.float32)) - 0.1
    faces = random_faces(rng, 2)
    ref = ref_decode_preds(torch.from_numpy(hm), [f.center for f in faces], [f.scale for f in faces], [64, 64]).numpy()
    masked, conf = decode_heatmaps(hm, faces, mask_nonpositive=True)
    np.testing.assert_allclose(masked, ref - 1.0, atol=1e-4)
    unmasked, _ = decode_heatmaps(hm, faces)
    assert (conf < 0).all()
    assert not np.allclose(unmasked, masked)  # we keep the argmax by default


def test_decode_points_are_inside_the_crop_square():
    rng = np.random.default_rng(5)
    hm = rng.normal(size=(4, 68, 64, 64)).astype(np.float32)
    faces = random_faces(rng, 4)
    pts, _ = decode_heatmaps(hm, faces)
    for f, p in zip(faces, pts):
        h = f.scale * 200
        assert (np.abs(p - np.array(f.center)) <= h / 2 + 1e-9).all()


# ---------------------------------------------------------------- box rule
def test_box_to_face_rule():
    f = box_to_face([100, 50, 180, 250], enlarge=1.25)
    assert f.center == (140.0, 150.0)
    assert f.scale == pytest.approx(200 / 200 * 1.25)
    g = whole_image_face(640, 480)
    assert g.center == (320.0, 240.0) and g.scale == pytest.approx(3.2)


# ---------------------------------------------------------------- crop vs an emulation of the official crop
def ref_bytescale(data: np.ndarray) -> np.ndarray:
    cmin, cmax = data.min(), data.max()
    cscale = cmax - cmin
    if cscale == 0:
        cscale = 1
    scale = float(255 - 0) / cscale
    bytedata = (data - cmin) * scale + 0
    return (bytedata.clip(0, 255) + 0.5).astype(np.uint8)


def ref_imresize(arr: np.ndarray, size) -> np.ndarray:
    """scipy.misc.imresize(arr, [h, w]) for a float HxWx3 array: bytescale, then PIL bilinear."""
    im = Image.fromarray(ref_bytescale(arr))
    return np.array(im.resize((size[1], size[0]), Image.BILINEAR))


def ref_crop(img: np.ndarray, center, scale, output_size=(256, 256)) -> np.ndarray:
    img = img.astype(np.float32)
    center_new = list(center)
    ht, wd = img.shape[0], img.shape[1]
    sf = scale * 200.0 / output_size[0]
    if sf < 2:
        sf = 1
    else:
        new_size = int(np.floor(max(ht, wd) / sf))
        new_ht = int(np.floor(ht / sf))
        new_wd = int(np.floor(wd / sf))
        if new_size < 2:
            return np.zeros((output_size[0], output_size[1], img.shape[2]))
        img = ref_imresize(img, [new_ht, new_wd])
        center_new[0] = center_new[0] * 1.0 / sf
        center_new[1] = center_new[1] * 1.0 / sf
        scale = scale / sf
    ul = np.array(ref_transform_pixel([0, 0], center_new, scale, output_size, invert=1, truncate=True))
    br = np.array(ref_transform_pixel(output_size, center_new, scale, output_size, invert=1, truncate=True))
    new_shape = [br[1] - ul[1], br[0] - ul[0], img.shape[2]]
    new_img = np.zeros(new_shape, dtype=np.float32)
    new_x = max(0, -ul[0]), min(br[0], len(img[0])) - ul[0]
    new_y = max(0, -ul[1]), min(br[1], len(img)) - ul[1]
    old_x = max(0, ul[0]), min(len(img[0]), br[0])
    old_y = max(0, ul[1]), min(len(img), br[1])
    new_img[new_y[0] : new_y[1], new_x[0] : new_x[1]] = img[old_y[0] : old_y[1], old_x[0] : old_x[1]]
    return ref_imresize(new_img, output_size)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut())


@pytest.mark.parametrize(
    "center,scale",
    [
        ((210.0, 115.0), 0.9375),  # the astronaut's face, 150 px box * 1.25
        ((200.3, 120.7), 1.7),  # 340 px square: downscale with antialiasing
        ((30.0, 480.0), 1.1),  # mostly outside: zero padding, contrast from the padded canvas
        ((256.0, 256.0), 1.28),  # 256 px: no resampling at all
        ((260.5, 250.25), 3.3),  # >= 2x the output: the official shrink step
        ((100.0, 60.0), 6.0),  # shrink, heavily padded
    ],
)
def test_crop_matches_official_emulation(astronaut, center, scale):
    ours, geo = crop_face(astronaut, Face(center, scale))
    ref = ref_crop(astronaut, center, scale)
    assert ours.dtype == np.float32 and ours.shape == (256, 256, 3)
    diff = np.abs(ours - ref.astype(np.float32))
    if geo.shrink > 1:
        # Region-only shrink equals the whole-image shrink up to float rounding.
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01
    else:
        assert diff.max() == 0


def test_crop_without_contrast_stretch_keeps_values():
    img = np.full((300, 300, 3), 100, np.uint8)
    img[100:200, 100:200] = 150
    stretched, _ = crop_face(img, Face((150.0, 150.0), 1.28))
    plain, _ = crop_face(img, Face((150.0, 150.0), 1.28), contrast_stretch=False)
    assert set(np.unique(plain)) == {100.0, 150.0}
    assert set(np.unique(stretched)) == {0.0, 255.0}  # the official bytescale stretch


def test_whole_image_face_crops_the_image_exactly():
    img = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    img[0, 0] = 0
    img[0, 1] = 255  # full range: the stretch is the identity
    crop, geo = crop_face(img, whole_image_face(256, 256))
    assert geo.ul == (0, 0) and geo.br == (256, 256)
    np.testing.assert_array_equal(crop, img.astype(np.float32))


@pytest.mark.parametrize("scale", [1.0, 1.9, 3.0])
def test_known_point_maps_into_the_crop_and_back(scale):
    """A bright blob at a known image point: find it in the crop, map back (< 0.5 px)."""
    h, w = 420, 520
    px, py = 247.3, 201.8  # continuous coordinates (pixel (i, j) covers [j, j+1] x [i, i+1])
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    blob = np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * 6.0**2))
    img = np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    face = Face((230.0, 215.0), scale)
    crop, geo = crop_face(img, face, contrast_stretch=False)
    g = crop[..., 0].astype(np.float64)
    g = np.where(g > 0.2 * g.max(), g, 0)
    cy, cx = np.mgrid[0:256, 0:256] + 0.5
    found = np.array([[(g * cx).sum() / g.sum(), (g * cy).sum() / g.sum()]])
    back = geo.crop_to_image(found)[0]
    assert np.hypot(*(back - [px, py])) < 0.5, (back, geo)
    fwd = geo.image_to_crop(np.array([[px, py]]))[0]
    np.testing.assert_allclose(geo.crop_to_image(fwd[None])[0], [px, py], atol=1e-9)


def test_heatmap_decode_agrees_with_crop_geometry():
    """The official inverse transform and the true crop sampling differ by < 1 crop pixel."""
    face = Face((233.7, 190.2), 1.63)
    geo = crop_geometry(face, (512, 512))
    hm = np.zeros((1, 1, 64, 64), np.float32)
    for i, j in [(5, 9), (32, 32), (60, 17)]:
        hm[:] = 0
        hm[0, 0, i, j] = 1.0
        pt, _ = decode_heatmaps(hm, [face])
        crop_pt = np.array([[(j + 0.5) * 4, (i + 0.5) * 4]])
        true_pt = geo.crop_to_image(crop_pt)[0]
        assert np.abs(pt[0, 0] - true_pt).max() < face.scale * 200 / 256 + 1.0


def test_tiny_image_huge_face_gives_zero_crop():
    img = np.full((3, 3, 3), 200, np.uint8)
    crop, geo = crop_face(img, Face((1.5, 1.5), 20.0))
    assert geo.empty and not crop.any()


# ---------------------------------------------------------------- flip helpers
def test_flip_back_swaps_pairs_and_is_an_involution():
    rng = np.random.default_rng(2)
    hm = rng.normal(size=(2, 4, 8, 8)).astype(np.float32)
    pairs = [(0, 3)]
    fb = flip_back(hm, pairs)
    np.testing.assert_array_equal(fb[:, 0], hm[:, 3, :, ::-1])
    np.testing.assert_array_equal(fb[:, 1], hm[:, 1, :, ::-1])
    np.testing.assert_array_equal(flip_back(fb, pairs), hm)
    np.testing.assert_array_equal(flip_back(hm[0], pairs), fb[0])
