"""``POST /detect`` with Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN over real HTTP, checked
against an independent transcription of the official test procedure on real photos.

The reference (:func:`official`) takes the exported networks' weights and runs, in plain torch:
the backbone, neck and RPN modules (shared code: Faster R-CNN's path, tested elsewhere); then, re-
implemented here from mmdetection's ``simple_test`` (v0.6 ``CascadeRCNN``/``MaskRCNN``, 2.x/3.x
``CascadeRoIHead``): RoI level mapping + RoIAlign, each cascade stage's box head, the class-agnostic
``regress_by_class`` between stages, the *mean of the stages' logits* before the softmax,
``multiclass_nms``, the full ``FCNMaskHead`` (every class channel), the mean of the stages'
sigmoids (``merge_aug_masks``), and the official paste-back: v0.6 ``get_seg_masks`` (int box,
``mmcv.imresize``, ``> 0.5``) or 2.x ``_do_paste_mask`` (``grid_sample`` of the whole image,
``>= 0.5``), then ``pycocotools`` RLE.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterator

import cv2
import httpx
import numpy as np
import pytest

from tests.conftest import (
    CASCADE_MASK_MODEL, CASCADE_MODEL, INSTANCE_MAX_SIZE, INSTANCE_MODELS, MASK_MODEL,
)
from tests.helpers import encode_png, photo, read_png, repo_settings, serve

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


@pytest.fixture(scope="module")
def instance_url(instance_repo: Path) -> Iterator[str]:
    with serve(repo_settings(instance_repo, max_concurrency=1, request_timeout_s=300)) as url:
        yield url


def _detect(url: str, rgb: np.ndarray, **options: Any) -> httpx.Response:
    return httpx.post(f"{url}/detect", files={"file": ("img.png", encode_png(rgb), "image/png")},
                      data={"options": json.dumps(options)}, timeout=300)


def _decode(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


# --------------------------------------------------------------------------------------------
# The independent reference


def _level_roi_align(feats: list, rois: Any, size: int, sampling: int, aligned: bool,
                     legacy: bool) -> Any:
    """mmdet SingleRoIExtractor: level floor(log2(sqrt(area)/56 + 1e-6)) in [0, 3]; legacy
    rois end at x2 + 1 (the v0.6 RoIAlign kernel's inclusive width)."""
    import torch
    from torchvision.ops import roi_align

    b = rois.clone()
    if legacy:
        b[:, 2:] += 1
    scale = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    lvl = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(0, 3).long()
    out = torch.zeros(len(b), feats[0].shape[1], size, size)
    for i in range(4):
        idx = torch.where(lvl == i)[0]
        if len(idx):
            r = torch.cat([torch.zeros(len(idx), 1), b[idx]], 1)
            out[idx] = roi_align(feats[i], r, size, 1.0 / 2 ** (i + 2), sampling, aligned)
    return out


def _delta2bbox(rois: Any, deltas: Any, stds: tuple, hw: tuple[int, int], legacy: bool) -> Any:
    """mmdet delta2bbox (means 0), clipped to the resized image."""
    import torch

    o = 1.0 if legacy else 0.0
    d = deltas.view(len(rois), -1, 4) * torch.tensor(stds)
    clip = abs(math.log(16 / 1000))
    px, py = ((rois[:, 0] + rois[:, 2]) * 0.5)[:, None], ((rois[:, 1] + rois[:, 3]) * 0.5)[:, None]
    pw, ph = (rois[:, 2] - rois[:, 0] + o)[:, None], (rois[:, 3] - rois[:, 1] + o)[:, None]
    gw, gh = pw * d[..., 2].clamp(-clip, clip).exp(), ph * d[..., 3].clamp(-clip, clip).exp()
    gx, gy = px + pw * d[..., 0], py + ph * d[..., 1]
    out = torch.stack([gx - gw * 0.5 + 0.5 * o, gy - gh * 0.5 + 0.5 * o,
                       gx + gw * 0.5 - 0.5 * o, gy + gh * 0.5 - 0.5 * o], -1)
    h, w = hw
    out[..., 0::2] = out[..., 0::2].clamp(0, w - o)
    out[..., 1::2] = out[..., 1::2].clamp(0, h - o)
    return out


def _mask_head(head: Any, x: Any) -> Any:
    """FCNMaskHead.forward with every class channel: convs + ReLU, deconv + ReLU, conv_logits."""
    import torch.nn.functional as F

    for conv in head.convs:
        x = F.relu(F.conv2d(x, conv.weight, conv.bias, padding=1))
    x = F.relu(F.conv_transpose2d(x, head.upsample.weight, head.upsample.bias, stride=2))
    return F.conv2d(x, head.conv_logits.weight, head.conv_logits.bias)


def official(model: Any, rgb: np.ndarray) -> dict[str, Any]:
    """The official test of one image (see the module docstring): boxes in original pixels
    (continuous frame), scores, labels and (Mask R-CNN) full-size boolean masks."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import batched_nms
    from torchvision.models.detection.image_list import ImageList

    cfg = model.cfg
    legacy = cfg.convention == "legacy"
    o = 1.0 if legacy else 0.0
    h, w = rgb.shape[:2]
    long_max, short_max = max(INSTANCE_MAX_SIZE), min(INSTANCE_MAX_SIZE)
    scale = min(long_max / max(h, w), short_max / min(h, w))
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)  # mmcv.imrescale
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    x = np.zeros((ph, pw, 3), np.float32)
    x[:nh, :nw] = (resized.astype(np.float32) - MEAN) / STD  # normalised, padded with 0
    x = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
    with torch.no_grad():
        levels = model.backbone(x)
        proposals, _ = model.rpn(ImageList(x, [torch.tensor([nh, nw])]), levels)
        feats = list(levels.values())
        rois = proposals[0]
        pool = dict(sampling=cfg.roi_sampling_ratio, aligned=cfg.roi_aligned, legacy=legacy)
        stages = cfg.cascade_stds or (cfg.box_stds,)
        heads = (list(zip(model.roi_heads.box_head, model.roi_heads.box_predictor))
                 if cfg.cascade_stds else [(model.roi_heads.box_head, model.roi_heads.box_predictor)])
        logits = []
        for s, ((box_head, predictor), stds) in enumerate(zip(heads, stages)):
            z = _level_roi_align(feats, rois, 7, **pool).flatten(1)
            z = F.relu(box_head.fc7(F.relu(box_head.fc6(z))))
            cls, reg = predictor.cls_score(z), predictor.bbox_pred(z)
            logits.append(cls)
            if s < len(stages) - 1:  # regress_by_class, class-agnostic
                rois = _delta2bbox(rois, reg, stds, (nh, nw), legacy)[:, 0]
        scores = F.softmax(sum(logits) / len(logits), -1)  # mean of the stages' logits
        boxes = _delta2bbox(rois, reg, stages[-1], (nh, nw), legacy)
        boxes = boxes.expand(-1, scores.shape[1], 4) if boxes.shape[1] == 1 else boxes
        b, sc = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1)
        lab = torch.arange(1, scores.shape[1]).repeat(len(scores))
        keep = sc > cfg.score_thresh
        b, sc, lab = b[keep], sc[keep], lab[keep]
        grown = b + torch.tensor([0, 0, o, o])  # +1 areas: the continuous IoU of grown boxes
        keep = batched_nms(grown, sc, lab, cfg.nms_thresh)[: cfg.detections_per_img]
        b, sc, lab = b[keep], sc[keep], lab[keep]
        out: dict[str, Any] = {"scores": sc.numpy(), "labels": lab.numpy()}
        if legacy:
            orig = b.numpy() / np.float32(scale)  # mmdet v0.6: divided by the one float scale
            out["boxes"] = orig + np.array([0, 0, 1, 1], np.float32)  # -> continuous frame
        else:
            factors = np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
            orig = b.numpy() / factors
            out["boxes"] = orig.copy()
        if not cfg.with_mask:
            return out
        mf = _level_roi_align(feats, b, cfg.mask_roi_size, **pool)
        probs = torch.stack([_mask_head(m, mf).sigmoid() for m in model.mask_heads]).mean(0)
        probs = probs[torch.arange(len(lab)), lab].numpy()  # merge_aug_masks, then the label
    masks = []
    for prob, box in zip(probs, orig):
        im = np.zeros((h, w), bool)
        if legacy:  # v0.6 get_seg_masks
            bb = box.astype(np.int32)
            bw, bh = max(bb[2] - bb[0] + 1, 1), max(bb[3] - bb[1] + 1, 1)
            m = cv2.resize(prob, (int(bw), int(bh))) > cfg.mask_thr_binary
            region = im[bb[1]:bb[1] + bh, bb[0]:bb[0] + bw]
            region[...] = m[:region.shape[0], :region.shape[1]]
        else:  # 2.x _do_paste_mask (skip_empty, CPU)
            t = torch.from_numpy(box)[None]
            x0i, y0i = (torch.clamp(t.min(0).values.floor()[:2] - 1, min=0).int()).tolist()
            x1i = int(torch.clamp(t[:, 2].max().ceil() + 1, max=w))
            y1i = int(torch.clamp(t[:, 3].max().ceil() + 1, max=h))
            bx0, by0, bx1, by1 = torch.split(t, 1, 1)
            iy = (torch.arange(y0i, y1i).float() + 0.5 - by0) / (by1 - by0) * 2 - 1
            ix = (torch.arange(x0i, x1i).float() + 0.5 - bx0) / (bx1 - bx0) * 2 - 1
            grid = torch.stack([ix[:, None, :].expand(1, iy.shape[1], ix.shape[1]),
                                iy[:, :, None].expand(1, iy.shape[1], ix.shape[1])], 3)
            pasted = F.grid_sample(torch.from_numpy(prob)[None, None], grid, align_corners=False)
            im[y0i:y1i, x0i:x1i] = pasted[0, 0].numpy() >= cfg.mask_thr_binary
        masks.append(im)
    out["masks"] = masks
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


# --------------------------------------------------------------------------------------------


#: The entries with a mask head, and those without.
MASK_ENTRIES = [n for n, (arch, _) in INSTANCE_MODELS.items() if "mask_rcnn" in arch]
BOX_ENTRIES = [n for n in INSTANCE_MODELS if n not in MASK_ENTRIES]


@pytest.mark.parametrize("name", list(INSTANCE_MODELS))
def test_models_say_head_outputs_and_stages(instance_url: str, name: str) -> None:
    """Every entry lists its head, its stages and its origin's paste rule (legacy for the
    official files, grid_sample for MMDetection 2.x/3.x), and its weights' format."""
    models = {m["name"]: m for m in httpx.get(f"{instance_url}/v1/models").json()["models"]}
    arch, fmt = INSTANCE_MODELS[name]
    head = arch.split("_hrnetv2p_")[0]
    masks = name in MASK_ENTRIES
    assert models[name]["detection"] == {
        "head": head, "outputs": ["boxes", "masks"] if masks else ["boxes"],
        "cascade_stages": 3 if head.startswith("cascade") else 1,
        "mask_paste": (("legacy" if fmt == "hrnet-det" else "grid_sample") if masks else None)}
    assert models[name]["default_options"].get("masks") is (False if masks else None)
    assert [o["name"] for o in models[name]["outputs"]][-1] == ("masks" if masks else "labels")


@pytest.mark.parametrize("name", list(INSTANCE_MODELS))
def test_served_output_equals_independent_official_procedure(instance_url: str,
                                                             instance_exports, name: str) -> None:
    """Boxes, scores, labels and masks of the served answer equal :func:`official` on real
    photos (the gateway's RLE decoded; mask IoU >= 0.99 per instance, 0.999 on average). As in
    the export's parity gate, >= 95% of the detections must pair up: the random test weights
    put many same-class boxes near the NMS IoU, where float rounding (ONNX Runtime vs torch)
    may keep one box of a pair instead of the other."""
    model = instance_exports[name].model
    for photo_name in ("coffee", "chelsea"):
        rgb = photo(photo_name)
        ref = official(model, rgb)
        masks = model.cfg.with_mask
        r = _detect(instance_url, rgb, model=name, **({"masks": True} if masks else {}))
        assert r.status_code == 200, r.text
        dets = r.json()["detections"]
        assert len(ref["boxes"]) > 10 and abs(len(dets) - len(ref["boxes"])) <= 5
        boxes = np.array([d["box"] for d in dets])
        used = np.zeros(len(dets), bool)
        ious = []
        for i in np.argsort(-ref["scores"]):
            cand = [j for j in range(len(dets)) if not used[j]
                    and dets[j]["label_index"] == ref["labels"][i]
                    and np.abs(boxes[j] - ref["boxes"][i]).max() < 0.02]
            if not cand:
                continue
            j = min(cand, key=lambda j: abs(dets[j]["score"] - ref["scores"][i]))
            used[j] = True
            assert abs(dets[j]["score"] - ref["scores"][i]) < 1e-4
            if masks:
                got = _decode(dets[j]["mask"]["rle"])
                assert dets[j]["mask"]["area"] == int(got.sum())
                ious.append(_iou(got, ref["masks"][i]))
        assert used.sum() >= 0.95 * max(len(dets), len(ref["boxes"])), (photo_name, used.sum())
        if masks:
            assert min(ious) >= 0.99 and float(np.mean(ious)) >= 0.999, (min(ious), np.mean(ious))


@pytest.mark.parametrize("name", [MASK_MODEL, CASCADE_MASK_MODEL])  # legacy, grid_sample paste
def test_masks_polygons_overlay_and_coco_results(instance_url: str, name: str) -> None:
    rgb = photo("astronaut")[::2, ::2].copy()  # 256 x 256
    plain = _detect(instance_url, rgb, model=name, overlay=True, overlay_format="png",
                    max_detections=5).json()
    assert "mask" not in plain["detections"][0] and plain["options"]["masks"] is False
    body = _detect(instance_url, rgb, model=name, masks=True, polygons=True, overlay=True,
                   overlay_format="png", coco_results=True, max_detections=5).json()
    legacy = INSTANCE_MODELS[name][1] == "hrnet-det"
    assert body["options"]["mask_paste"] == ("legacy" if legacy else "grid_sample")
    assert body["options"]["mask_threshold"] == 0.5
    dets = body["detections"]
    assert len(dets) == 5
    # The mask lies within its box: legacy pastes into the box's whole pixels; _do_paste_mask
    # samples a region one pixel wider on each side (pixel centres up to half a mask cell out).
    grow = 0 if legacy else 1
    union = np.zeros(rgb.shape[:2], bool)
    for d in dets:
        m = _decode(d["mask"]["rle"])
        assert m.shape == rgb.shape[:2] and d["mask"]["area"] == m.sum() > 0
        ys, xs = np.nonzero(m)
        x1, y1, x2, y2 = d["box"]
        assert xs.min() >= math.floor(x1) - grow and xs.max() < math.ceil(x2) + 1
        assert ys.min() >= math.floor(y1) - grow and ys.max() < math.ceil(y2) + 1
        polys = d["mask"]["polygons"]
        assert polys and all(len(p["exterior"]) >= 3 for p in polys)
        inside = np.zeros(m.shape, np.uint8)
        for p in polys:
            cv2.fillPoly(inside, [np.round(np.array(p["exterior"]) - 0.5).astype(np.int32)], 1)
        assert _iou(inside.astype(bool), m) > 0.8  # outlines (simplified, holes aside)
        union |= m
    assert [c["segmentation"] for c in body["coco_results"]] == [d["mask"]["rle"] for d in dets]
    with_masks, boxes_only = read_png(body["overlay"]["data"]), read_png(plain["overlay"]["data"])
    changed = np.any(with_masks != boxes_only, axis=-1)
    # the masks are blended where they are (outlines and captions cover part of them) and
    # nothing else changes
    assert changed[union].mean() > 0.2 and not changed[~union].any()


@pytest.mark.parametrize("name", [CASCADE_MASK_MODEL, MASK_MODEL])  # continuous, legacy +1
def test_flip_tta_merges_masks_and_mirrors(instance_url: str, name: str) -> None:
    rgb = photo("chelsea")[:, :420].copy()
    a = _detect(instance_url, rgb, model=name, masks=True, flip=True,
                max_detections=10).json()["detections"]
    b = _detect(instance_url, np.ascontiguousarray(rgb[:, ::-1]), model=name,
                masks=True, flip=True, max_detections=10).json()["detections"]
    assert len(a) == len(b) == 10
    w = rgb.shape[1]
    for d in a:  # the mirrored image's matching detection has the mirrored mask
        x1, y1, x2, y2 = d["box"]
        match = [e for e in b if e["label_index"] == d["label_index"]
                 and np.abs(np.array(e["box"]) - [w - x2, y1, w - x1, y2]).max() < 0.05]
        assert match, d
        assert _iou(_decode(d["mask"]["rle"])[:, ::-1], _decode(match[0]["mask"]["rle"])) > 0.98


@pytest.mark.parametrize("options", [*({"model": n, "masks": True} for n in BOX_ENTRIES),
                                     {"model": CASCADE_MODEL, "polygons": True},
                                     {"model": MASK_MODEL, "polygon_tolerance": -1},
                                     {"model": MASK_MODEL, "masks": "sometimes"}])
def test_bad_mask_options_are_422(instance_url: str, options: dict) -> None:
    r = _detect(instance_url, np.zeros((64, 64, 3), np.uint8), **options)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_options",)
