"""THE parity test: the gateway's /segment label map vs an independent torch + OpenCV
re-implementation of the official HRNet test procedure (lib/datasets/base_dataset.py
``multi_scale_inference``/``inference``, the Cityscapes override, LIP's square resize and channel
swap), with the very torch module that was exported to ONNX, on real photographs.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fastapi.testclient import TestClient
from PIL import Image
from skimage import data as skdata

from service.app import create_app
from service.settings import Settings

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


# ------------------------------------------------------------------------------------------------
# Reference: the official procedure, written the way the official code does it.
# ------------------------------------------------------------------------------------------------


def _input_transform(rgb: np.ndarray) -> np.ndarray:
    image = rgb.astype(np.float32) / 255.0
    image -= MEAN
    image /= STD
    return image.astype(np.float32)


def _image_resize(image: np.ndarray, long_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    if h > w:
        new_h, new_w = long_size, int(w * long_size / h + 0.5)
    else:
        new_w, new_h = long_size, int(h * long_size / w + 0.5)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def _pad(image: np.ndarray, h: int, w: int, size, padvalue) -> np.ndarray:
    pad_h, pad_w = max(size[0] - h, 0), max(size[1] - w, 0)
    if pad_h > 0 or pad_w > 0:
        return cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=padvalue)
    return image.copy()


class Official:
    def __init__(self, model, meta):
        self.model = model
        self.num_classes = len(meta.labels)
        p = meta.segmentation
        self.base_size, self.crop_size = p.base_size, tuple(p.crop_size)
        self.square = p.resize_to_square
        self.ac = meta.align_corners
        self.pairs = [tuple(x) for x in meta.flip_pairs]

    def _up(self, x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.ac)

    @torch.no_grad()
    def inference(self, image: torch.Tensor, flip: bool) -> torch.Tensor:
        size = image.shape[-2:]
        pred = self._up(self.model(image), size)
        if flip:
            flip_out = self._up(self.model(torch.flip(image, [3])), size)
            flip_pred = flip_out.clone()
            for i, j in self.pairs:
                flip_pred[:, i], flip_pred[:, j] = flip_out[:, j], flip_out[:, i]
            pred = (pred + torch.flip(flip_pred, [3])) * 0.5
        return pred.exp()

    def _run(self, img_hwc: np.ndarray, flip: bool) -> torch.Tensor:
        return self.inference(torch.from_numpy(np.ascontiguousarray(img_hwc.transpose(2, 0, 1)))[None], flip)

    @torch.no_grad()
    def predict(self, rgb: np.ndarray, scales, flip: bool, variant: str) -> np.ndarray:
        H, W = rgb.shape[:2]
        if self.square:
            rgb = cv2.resize(rgb, (self.square, self.square), interpolation=cv2.INTER_LINEAR)
        image = _input_transform(rgb)
        ori_h, ori_w = image.shape[:2]
        final = torch.zeros(1, self.num_classes, ori_h, ori_w)
        padvalue = tuple((-MEAN / STD).tolist())
        ch, cw = self.crop_size
        for scale in scales:
            new_img = _image_resize(image, int(self.base_size * scale + 0.5))
            height, width = new_img.shape[:2]
            if variant == "cityscapes":
                if scale <= 1.0:
                    preds = self._run(new_img, flip)[:, :, :height, :width]
                else:
                    preds = torch.zeros(1, self.num_classes, height, width)
                    count = torch.zeros(1, 1, height, width)
                    rows = int(np.ceil((height - ch) / ch)) + 1
                    cols = int(np.ceil((width - cw) / cw)) + 1
                    for r in range(rows):
                        for c in range(cols):
                            h1, w1 = min(r * ch + ch, height), min(c * cw + cw, width)
                            h0, w0 = max(h1 - ch, 0), max(w1 - cw, 0)
                            pred = self._run(new_img[h0:h1, w0:w1], flip)
                            preds[:, :, h0:h1, w0:w1] += pred[:, :, : h1 - h0, : w1 - w0]
                            count[:, :, h0:h1, w0:w1] += 1
                    preds = preds / count
            else:
                if max(height, width) <= min(ch, cw):
                    padded = _pad(new_img, height, width, self.crop_size, padvalue)
                    preds = self._run(padded, flip)[:, :, :height, :width]
                else:
                    if height < ch or width < cw:
                        new_img = _pad(new_img, height, width, self.crop_size, padvalue)
                    new_h, new_w = new_img.shape[:2]
                    sh, sw = int(ch * 2.0 / 3.0), int(cw * 2.0 / 3.0)
                    rows = int(np.ceil((new_h - ch) / sh)) + 1
                    cols = int(np.ceil((new_w - cw) / sw)) + 1
                    preds = torch.zeros(1, self.num_classes, new_h, new_w)
                    count = torch.zeros(1, 1, new_h, new_w)
                    for r in range(rows):
                        for c in range(cols):
                            h0, w0 = r * sh, c * sw
                            h1, w1 = min(h0 + ch, new_h), min(w0 + cw, new_w)
                            crop = new_img[h0:h1, w0:w1]
                            if h1 == new_h or w1 == new_w:
                                crop = _pad(crop, h1 - h0, w1 - w0, self.crop_size, padvalue)
                            pred = self._run(crop, flip)
                            preds[:, :, h0:h1, w0:w1] += pred[:, :, : h1 - h0, : w1 - w0]
                            count[:, :, h0:h1, w0:w1] += 1
                    preds = (preds / count)[:, :, :height, :width]
            final += self._up(preds, (ori_h, ori_w))
        if (ori_h, ori_w) != (H, W):
            final = self._up(final, (H, W))
        return final.argmax(1)[0].numpy()


# ------------------------------------------------------------------------------------------------


PHOTOS = {"coffee": skdata.coffee, "chelsea": skdata.chelsea, "astronaut": skdata.astronaut}


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(model_repo):
    torch.set_num_threads(1)
    settings = Settings(repository=model_repo, ort_intra_threads=1, ort_inter_threads=1,
                        max_passes=512, merge_on_device="off")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def graph_client(model_repo):
    """The same gateway with the merge in the backend: the entries' merge graph on ONNX Runtime
    CPU (what runs on CUDA where the network does)."""
    settings = Settings(repository=model_repo, ort_intra_threads=1, ort_inter_threads=1,
                        max_passes=512, merge_on_device="on")
    with TestClient(create_app(settings)) as c:
        backend = c.app.state.backend
        assert backend.merge_models() >= {"seg_cityscapes", "seg_pascal", "seg_lip"}
        real, c.merge_calls = backend.infer, []

        async def counting(model, inputs):  # proves the graph merged (no silent fallback)
            if model.endswith("/merge"):
                c.merge_calls.append(model)
            return await real(model, inputs)

        backend.infer = counting
        yield c


CASES = [
    # id, model, scales, flip, window (None: model's), photos
    ("single_scale", "seg_cityscapes", [1.0], False, None, ["coffee", "chelsea"]),
    ("multiscale_flip", "seg_cityscapes", [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], True, None, ["coffee"]),
    ("cityscapes_windows", "seg_cityscapes", [1.5], False, None, ["chelsea"]),
    ("base_padded_whole_and_windows", "seg_pascal", [0.75, 1.0, 1.5], True, None, ["coffee", "astronaut"]),
    ("base_override_on_cityscapes", "seg_cityscapes", [0.5, 1.25], False, "base", ["chelsea"]),
    ("lip_flip", "seg_lip", [1.0], True, None, ["astronaut", "coffee"]),
    ("lip_multiscale_flip", "seg_lip", [0.75, 1.25], True, None, ["chelsea"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_label_map_matches_official(case, client, graph_client, exported_models):
    """Both merges, the gateway's (numpy) and the backend's merge graph, against the official
    procedure, with the same threshold."""
    cid, name, scales, flip, window, photos = case
    exp = exported_models[name]
    meta = exp.metadata
    ref_impl = Official(exp.model.eval(), meta)
    variant = window or meta.segmentation.window
    for photo in photos:
        rgb = np.ascontiguousarray(PHOTOS[photo]()[:, :, :3])
        opts = {"model": name, "scales": scales, "flip": flip}
        if window:
            opts["window"] = window
        import json

        ref = ref_impl.predict(rgb, scales, flip, variant)
        n_classes = len(np.unique(ref))
        assert n_classes >= 3, "degenerate reference: random model predicts too few classes"
        for merge, gateway in (("gateway", client), ("graph", graph_client)):
            merges = len(graph_client.merge_calls)
            r = gateway.post(
                "/segment", files={"file": ("x.png", _png(rgb), "image/png")},
                data={"options": json.dumps(opts)}, headers={"Accept": "image/png"},
            )
            assert r.status_code == 200, r.text
            assert len(graph_client.merge_calls) == merges + (merge == "graph")
            got = np.array(Image.open(io.BytesIO(r.content)))
            assert got.shape == ref.shape == rgb.shape[:2]
            agree = float((got == ref).mean())
            print(f"parity {cid} {photo} {rgb.shape[1]}x{rgb.shape[0]} ({merge} merge): "
                  f"agreement {agree * 100:.4f}% ({n_classes} classes in reference)")
            assert agree >= 0.999, f"{cid}/{photo} ({merge}): only {agree:.5f} of pixels agree"


def test_early_merge_gives_the_merge_after_the_passes(model_repo, monkeypatch):
    """A gateway that sums the scales on its background thread as their passes come
    (``early_merge=on``) answers the label map of one that merges after the last pass."""
    import json

    from service.tasks.segmentation import merge_early as seg_merge

    finished = []
    real = seg_merge.EarlyMerge.finish

    def counting(self):  # type: ignore[no-untyped-def]
        finished.append(self._submitted)  # scales handed to the background thread
        return real(self)

    monkeypatch.setattr(seg_merge.EarlyMerge, "finish", counting)
    rgb = np.ascontiguousarray(PHOTOS["coffee"]()[:, :, :3])
    opts = {"model": "seg_pascal", "scales": [0.75, 1.0, 1.5], "flip": True}
    answers = []
    for mode in ("on", "off"):
        settings = Settings(repository=model_repo, ort_intra_threads=1, ort_inter_threads=1,
                            max_passes=512, merge_on_device="off", early_merge=mode)
        with TestClient(create_app(settings)) as gateway:
            r = gateway.post("/segment", files={"file": ("x.png", _png(rgb), "image/png")},
                             data={"options": json.dumps(opts)}, headers={"Accept": "image/png"})
            assert r.status_code == 200, r.text
            answers.append(np.array(Image.open(io.BytesIO(r.content))))
    assert finished == [2]  # the early merge ran for the first gateway only, 2 of 3 scales early
    assert np.array_equal(answers[0], answers[1])
