"""ONNX export: dynamic shapes, in-graph normalisation, parity with PyTorch, parity failures."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from model_export.errors import ParityError
from model_export.onnx.hrnet import (
    PixelInput,
    check_parity,
    heatmap_peaks,
    normalise,
    onnx_session,
    require_parity,
)
from model_export.onnx.photos import parity_images, pixel_batch
from tests.conftest import FACE_300W, SEG_CITYSCAPES, SEG_LIP, SEG_PASCAL

# Trace size of the session fixture is 80x112; these differ from it and from each other, and the
# odd sides exercise ceil(ceil(H/2)/2).
SEG_SIZES = [(72, 100), (97, 161)]


def _torch(model: torch.nn.Module, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(normalise(pixels))).numpy()


@pytest.mark.parametrize("size", SEG_SIZES)
def test_segmentation_onnx_matches_torch_at_untraced_sizes(exported_models, torch_models, size) -> None:
    entry = exported_models[SEG_CITYSCAPES].entry
    sess = onnx_session(entry.model_file)
    pixels, _ = pixel_batch(parity_images(), size, 3)
    got = sess.run(["logits"], {"image": pixels})[0]
    ref = _torch(torch_models[SEG_CITYSCAPES], pixels)
    h, w = size
    assert got.shape == (3, 19, math.ceil(math.ceil(h / 2) / 2), math.ceil(math.ceil(w / 2) / 2))
    assert np.abs(got - ref).max() <= 1e-3 + 1e-4 * np.abs(ref).max()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.999
    # The demo randomisation must give spatially varying label maps, not one class everywhere.
    labels = ref.argmax(1)
    assert all(len(np.unique(labels[i])) >= 3 for i in range(3))


def test_landmark_onnx_matches_torch(exported_models, torch_models) -> None:
    entry = exported_models[FACE_300W].entry
    sess = onnx_session(entry.model_file)
    # One photo: the W18 torch forward is the slow part on CPU (the parity report covers batch 2).
    pixels, _ = pixel_batch(parity_images(), (256, 256), 1, offset=1)
    got = sess.run(["heatmaps"], {"image": pixels})[0]
    ref = _torch(torch_models[FACE_300W], pixels)
    assert got.shape == (1, 68, 64, 64)
    err = np.abs(got - ref).max()
    assert err <= 1e-3 + 1e-4 * np.abs(ref).max()
    p_ref, p_got = heatmap_peaks(ref)[0].astype(int), heatmap_peaks(got)[0].astype(int)
    for k in range(68):
        if (p_ref[k] != p_got[k]).any():  # allowed only for a numeric tie in torch's map
            assert ref[0, k].max() - ref[0, k, p_got[k, 1], p_got[k, 0]] <= 2 * err
    # Peaks are spread over the map, not all in one corner.
    assert p_ref.std(axis=0).min() > 2.0


def test_graph_signature(exported_models) -> None:
    import onnx

    seg = onnx.load(str(exported_models[SEG_PASCAL].entry.model_file))
    (inp,) = seg.graph.input
    (out,) = seg.graph.output
    assert (inp.name, out.name) == ("image", "logits")
    dims = inp.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True]
    assert dims[1].dim_value == 3
    assert out.type.tensor_type.shape.dim[1].dim_value == 59
    assert max(o.version for o in seg.opset_import if o.domain in ("", "ai.onnx")) >= 17

    face = onnx.load(str(exported_models[FACE_300W].entry.model_file))
    fdims = face.graph.input[0].type.tensor_type.shape.dim
    assert bool(fdims[0].dim_param) and [d.dim_value for d in fdims[1:]] == [3, 256, 256]
    assert face.graph.output[0].name == "heatmaps"


def test_pixel_zero_is_the_official_pad_value() -> None:
    wrapper = PixelInput(torch.nn.Identity())
    out = wrapper(torch.zeros(1, 3, 2, 2))
    expected = -torch.tensor([0.485, 0.456, 0.406]) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out[0, :, 0, 0], expected)
    px = torch.full((1, 3, 1, 1), 255.0)
    torch.testing.assert_close(wrapper(px), torch.from_numpy(normalise(px.numpy())))


@pytest.mark.parametrize("name", [SEG_CITYSCAPES, SEG_PASCAL, SEG_LIP, FACE_300W])
def test_parity_report_written(exported_models, name) -> None:
    result = exported_models[name]
    report = json.loads(result.entry.parity.read_text())
    assert report["passed"] is True
    sizes = {tuple(c["size"]) for c in report["cases"]}
    batches = {c["batch"] for c in report["cases"]}
    assert batches == {1, 2}
    if result.metadata.task == "segmentation":
        assert len(sizes) >= 2 and report["dynamic_size_checked"] is True
        assert all(c["label_agreement"] >= 0.999 for c in report["cases"])
    else:
        assert sizes == {(256, 256)}
        assert all(c["max_landmark_displacement"] <= 1.0 for c in report["cases"])
    assert all(c["max_abs_err"] < 1e-2 for c in report["cases"])


def test_parity_detects_a_different_network(exported_models, torch_models) -> None:
    tampered = copy.deepcopy(torch_models[SEG_CITYSCAPES])
    with torch.no_grad():
        tampered.last_layer[3].bias[3] += 50.0  # class 3 wins everywhere in torch only
    report = check_parity(tampered, exported_models[SEG_CITYSCAPES].entry.model_file,
                          task="segmentation", sizes=[(64, 96)], batches=[1], trace_size=(80, 112))
    assert not report.passed
    assert report.cases[0].label_agreement < 0.5
    with pytest.raises(ParityError, match="FAIL"):
        require_parity(report)


def test_parity_needs_an_untraced_size(exported_models, torch_models) -> None:
    with pytest.raises(ValueError, match="trace size"):
        check_parity(torch_models[SEG_LIP], exported_models[SEG_LIP].entry.model_file,
                     task="segmentation", sizes=[(80, 112)], trace_size=(80, 112))
