"""Dataset facts: counts, flip pairs, label maps, palettes and official protocols."""

from __future__ import annotations

import pytest

from model_export.datasets import CITYSCAPES_TRAINID_TO_ID, DATASETS, get_dataset
from service.imaging.palette import voc_palette

EXPECTED_COUNTS = {
    "cityscapes": 19,
    "pascal_context_59": 59,
    "pascal_context_60": 60,
    "lip": 20,
    "300w": 68,
    "wflw": 98,
    "aflw": 19,
    "cofw": 29,
}


@pytest.mark.parametrize("name,count", sorted(EXPECTED_COUNTS.items()))
def test_label_counts(name: str, count: int) -> None:
    ds = get_dataset(name)
    assert ds.num_outputs == count
    assert len(set(ds.labels)) == count, "labels must be unique"
    if ds.palette is not None:
        assert len(ds.palette) == count
        assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in ds.palette)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_flip_pairs_form_an_involution(name: str) -> None:
    ds = DATASETS[name]
    n = ds.num_outputs
    perm = list(range(n))
    for a, b in ds.flip_pairs:
        assert 0 <= a < n and 0 <= b < n and a != b
        assert perm[a] == a and perm[b] == b, f"index used twice in {name} pairs"
        perm[a], perm[b] = b, a
    assert [perm[perm[i]] for i in range(n)] == list(range(n))


def test_landmark_pairs_match_the_official_lists() -> None:
    # 300W: MATCHED_PARTS is 1-based upstream; jaw (1,17) and the mouth's (68,66) pair.
    pairs_300w = set(get_dataset("300w").flip_pairs)
    assert (0, 16) in pairs_300w and (67, 65) in pairs_300w and len(pairs_300w) == 29
    # Eye outer corners (37, 46) pair with each other and are the NME points.
    assert (36, 45) in pairs_300w
    assert get_dataset("300w").landmarks.inter_ocular == (36, 45)
    # WFLW is 0-based upstream: kept as is.
    wflw = get_dataset("wflw")
    assert (0, 32) in wflw.flip_pairs and (96, 97) in wflw.flip_pairs and len(wflw.flip_pairs) == 44
    assert wflw.landmarks.inter_ocular == (60, 72)
    assert get_dataset("aflw").landmarks.nme_normalization == "box"
    assert get_dataset("cofw").landmarks.inter_ocular == (8, 9)
    # Symmetric names: 300W's right eye outer corner flips to the left eye's.
    names = get_dataset("300w").labels
    assert names[36] == "right_eye_1" and names[45] == "left_eye_4"


def test_lip_flip_pairs_are_left_right_classes() -> None:
    lip = get_dataset("lip")
    assert lip.flip_pairs == [(14, 15), (16, 17), (18, 19)]
    for a, b in lip.flip_pairs:
        assert lip.labels[a].startswith("left-") and lip.labels[b].startswith("right-")
        assert lip.labels[a][5:] == lip.labels[b][6:]


def test_cityscapes_label_map() -> None:
    ds = get_dataset("cityscapes")
    assert ds.label_ids == CITYSCAPES_TRAINID_TO_ID
    assert dict(enumerate(ds.label_ids)) == {
        0: 7, 1: 8, 2: 11, 3: 12, 4: 13, 5: 17, 6: 19, 7: 20, 8: 21, 9: 22, 10: 23, 11: 24,
        12: 25, 13: 26, 14: 27, 15: 28, 16: 31, 17: 32, 18: 33,
    }  # fmt: skip
    assert ds.labels[0] == "road" and ds.labels[18] == "bicycle"
    assert ds.palette[0] == (128, 64, 128)


def test_pascal_context_classes() -> None:
    p59, p60 = get_dataset("pascal_context_59"), get_dataset("pascal_context_60")
    assert p60.labels[0] == "background" and p60.labels[1:] == p59.labels
    assert p59.labels == sorted(p59.labels), "official order is alphabetical"
    assert p59.palette == p60.palette[1:], "a class keeps its colour in both models"
    assert get_dataset("pascal_ctx") is p59  # alias


def test_voc_palette() -> None:
    pal = voc_palette(256)
    assert pal[:4] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert pal[15] == (192, 128, 128)  # VOC 'person'
    assert len(set(pal)) == 256


def test_protocol_defaults() -> None:
    cs = get_dataset("cityscapes").segmentation
    assert (cs.base_size, tuple(cs.crop_size), cs.window) == (2048, (1024, 2048), "cityscapes")
    assert cs.multi_scales == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    pc = get_dataset("pascal_context_59").segmentation
    assert (pc.base_size, tuple(pc.crop_size), pc.window) == (520, (520, 520), "base")
    assert pc.multi_scales[-1] == 2.0
    lip = get_dataset("lip").segmentation
    assert (lip.base_size, lip.resize_to_square, tuple(lip.crop_size)) == (473, 473, (473, 473))
    assert lip.flip is True


def test_unknown_dataset_lists_known_ones() -> None:
    with pytest.raises(KeyError, match="cityscapes"):
        get_dataset("ade20k")
