"""The segmentation merge graph (model_export/onnx/merge.py fed by
service/tasks/segmentation/merge_graph.py) against the gateway's merge, and the gateway running
it in the backend: only the uint8 label map (and the confidence when asked) comes back.

The parity of whole requests against the official procedure is tests/service/test_segment_parity.py
(both merges, same threshold).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.contract import ExportInfo, WeightsInfo, merge_model_name
from service.settings import Settings
from service.tasks.segmentation.merge import merge_segmentation
from service.tasks.segmentation.merge_graph import merge_feed
from service.tasks.segmentation.plan import plan_segmentation
from tests.conftest import SEG_CITYSCAPES, SEG_LIP, SEG_PASCAL
from tests.helpers import encode_png


def _meta(dataset: str, **kw):
    from model_export.metadata import build_metadata

    return build_metadata(
        name="m", task="segmentation", arch="hrnetv2_w18", dataset=dataset,
        weights=WeightsInfo(random_init=True, origin="random-init", format="random-init"),
        export=ExportInfo(model_export_version="0", torch="t", onnx="o", opset=18,
                          exported_at="now"), max_batch_size=8, **kw)


@pytest.fixture(scope="module")
def graph():
    import onnxruntime as ort

    from model_export.onnx.merge import build_merge_graph

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(build_merge_graph().SerializeToString(), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def _logits(plan, classes: int, rng: np.random.Generator, sigma: float = 3.0):
    out = []
    for sp in plan.scales:
        h4, w4 = -(-sp.pass_size[0] // 4), -(-sp.pass_size[1] // 4)
        out += [rng.normal(0, sigma, (classes, h4, w4)).astype(np.float32)
                for _ in range(sp.n_regions * plan.passes_per_region)]
    return out


CASES = [
    # dataset, protocol overrides, image (h, w), scales, flip, window, align_corners
    ("cityscapes", {"base_size": 128, "crop_size": (64, 128)}, (50, 90),
     [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], True, None, False),
    ("cityscapes", {"base_size": 128, "crop_size": (64, 128)}, (64, 128), [1.0], False, None,
     False),  # one whole pass at the original size: no exp, softmax confidence
    ("cityscapes", {"base_size": 128, "crop_size": (64, 128)}, (64, 128), [1.0, 1.5], True,
     "base", True),
    ("pascal_context_59", {"base_size": 96, "crop_size": (64, 64)}, (70, 50), [0.75, 1.0, 1.5],
     True, None, False),
    ("lip", {"base_size": 48}, (70, 50), [0.75, 1.25], True, None, False),
]


@pytest.mark.parametrize("case", CASES, ids=["cityscapes_6_scales_flip", "whole_single",
                                             "base_windows_align_corners", "pascal_base",
                                             "lip_square_flip_pairs"])
def test_graph_equals_the_gateway_merge(case, graph) -> None:
    dataset, proto, size, scales, flip, window, ac = case
    meta = _meta(dataset, align_corners=ac, **proto)
    rng = np.random.default_rng(7)
    for confidence in (False, True):
        plan = plan_segmentation(size, meta, scales=scales, flip=flip, variant=window,
                                 confidence=confidence)
        logits = _logits(plan, len(meta.labels), rng)
        ref = merge_segmentation(plan, logits)
        labels, conf = graph.run(None, merge_feed(plan, logits))
        assert labels.dtype == np.uint8 and labels.shape == size
        # Same arithmetic but for the order of a few float sums: identical labels here.
        assert (labels == ref.labels).mean() == 1.0
        if confidence:
            assert conf.shape == size and np.abs(conf - ref.confidence).max() < 1e-5
        else:
            assert conf.size == 0


def test_feed_leaves_what_the_graph_cannot_do_exactly_to_the_gateway() -> None:
    meta = _meta("cityscapes", base_size=64, crop_size=(32, 64))
    plan = plan_segmentation((32, 64), meta, scales=[1.0, 1.5], flip=False)
    logits = _logits(plan, 19, np.random.default_rng(0))
    assert merge_feed(plan, logits) is not None
    logits[0][0, 0, 0] = 90.0  # exp(90) overflows float32: the gateway's exact gathers
    assert merge_feed(plan, logits) is None
    logits[0][0, 0, 0] = np.nan
    assert merge_feed(plan, logits) is None
    many = [np.zeros((300,) + lg.shape[1:], np.float32) for lg in logits]
    assert merge_feed(plan, many) is None  # more classes than a uint8 label holds


def _post(client: TestClient, photo: bytes, model: str, **options) -> dict:
    r = client.post("/segment", files={"file": ("p.png", photo, "image/png")},
                    data={"options": json.dumps({"model": model, **options})})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def photo() -> bytes:
    from skimage import data

    return encode_png(np.asarray(Image.fromarray(data.coffee()).resize((120, 90))))


def test_gateway_receives_only_label_maps(model_repo, photo, monkeypatch) -> None:
    """merge_on_device=on: every segmentation merge is the backend's merge graph; what it hands
    the gateway is the uint8 label map (plus the float confidence only when asked), and the
    gateway's numpy merge never runs."""
    import service.tasks.segmentation.merge as gateway_merge

    def no_gateway_merge(*_a, **_k):
        raise AssertionError("the gateway merged")

    monkeypatch.setattr(gateway_merge, "merge_segmentation", no_gateway_merge)
    settings = Settings(repository=model_repo, merge_on_device="on", ort_intra_threads=1)
    with TestClient(create_app(settings)) as client:
        backend = client.app.state.backend
        assert backend.merge_models() >= {SEG_CITYSCAPES, SEG_PASCAL, SEG_LIP}
        # The merge graph is no model of its own: not listed, no provider line.
        assert merge_model_name(SEG_CITYSCAPES) not in client.get("/v1/models").text
        assert set(backend.providers()) == set(backend._models)
        merged: list[dict[str, np.ndarray]] = []
        real = backend.infer

        async def spy(model, inputs):
            out = await real(model, inputs)
            if model.endswith("/merge"):
                merged.append(out)
            return out

        monkeypatch.setattr(backend, "infer", spy)
        for model in (SEG_CITYSCAPES, SEG_PASCAL, SEG_LIP):
            _post(client, photo, model, scales="multi", flip=True)
        _post(client, photo, SEG_CITYSCAPES, scales=[1.0, 1.5], confidence=True)
    assert len(merged) == 4
    for out in merged[:3]:
        assert out["labels"].dtype == np.uint8 and out["labels"].shape == (90, 120)
        assert out["confidence"].size == 0  # no float map at all unless asked
    assert merged[3]["confidence"].dtype == np.float32
    assert merged[3]["confidence"].shape == (90, 120)
    assert [k for k, v in merged[0].items() if v.size and v.dtype.kind == "f"] == []


def test_auto_merges_in_the_gateway_on_cpu(model_repo, photo, monkeypatch) -> None:
    """merge_on_device=auto (the default) on CPU providers: the gateway's merge (measured faster
    on CPU, benchmarks/bench_device_merge.py); off: no merge graph is even loaded."""
    import service.tasks.segmentation.merge as gateway_merge

    calls: list[int] = []
    real = gateway_merge.merge_segmentation
    monkeypatch.setattr(gateway_merge, "merge_segmentation",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    with TestClient(create_app(Settings(repository=model_repo, ort_intra_threads=1))) as client:
        assert client.app.state.backend.merge_models()  # loaded, but CPU: not used
        _post(client, photo, SEG_CITYSCAPES)
    assert calls == [1]
    with TestClient(create_app(Settings(repository=model_repo, merge_on_device="off",
                                        ort_intra_threads=1))) as client:
        assert client.app.state.backend.merge_models() == set()


def test_every_segmentation_entry_carries_its_merge_graph(model_repo) -> None:
    from model_export.repository import read_metadata

    for name in (SEG_CITYSCAPES, SEG_PASCAL, SEG_LIP):
        meta = read_metadata(model_repo / name)
        assert meta.segmentation.merge_graph == "merge.onnx"
        assert (model_repo / name / "1" / "merge.onnx").is_file()


def test_served_merge_feed_and_its_refusal(model_repo, photo, monkeypatch) -> None:
    """A backend offering a served merge (``<model>__segment``, Triton's) gets one call per
    image with every pass's pixels and the tables; the logit sizes the tables assume are the
    network's own, and the flat pixels are the passes in order. When it answers
    ``merged=false`` (scores past the float32 bound) the image runs and is merged the usual way,
    with the same answer as a gateway that never tried."""
    with TestClient(create_app(Settings(repository=model_repo, merge_on_device="off",
                                        ort_intra_threads=1))) as client:
        expected = _post(client, photo, SEG_PASCAL, scales=[0.75, 1.0, 1.5], flip=True)
    with TestClient(create_app(Settings(repository=model_repo, merge_on_device="on",
                                        ort_intra_threads=1))) as client:
        backend = client.app.state.backend
        real = backend.infer
        calls: list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray]]] = []

        async def refusing(model, inputs):
            if model.endswith("__segment"):
                out = {"labels": np.zeros((0, 0), np.uint8),
                       "confidence": np.zeros((0, 0), np.float32), "merged": np.array([False])}
            else:
                out = await real(model, inputs)
            calls.append((model, inputs, out))
            return out

        monkeypatch.setattr(backend, "served_merge", lambda name: f"{name}__segment",
                            raising=False)
        monkeypatch.setattr(backend, "infer", refusing)
        got = _post(client, photo, SEG_PASCAL, scales=[0.75, 1.0, 1.5], flip=True)
    assert got["classes"] == expected["classes"] and got["label_map"] == expected["label_map"]
    served, *rest = calls
    network = [c for c in rest if c[0] == SEG_PASCAL]  # the fallback: passes, then a merge
    assert served[0] == f"{SEG_PASCAL}__segment" and network
    assert {m for m, _, _ in rest} <= {SEG_PASCAL, merge_model_name(SEG_PASCAL)}
    feed = served[1]
    assert "logits" not in feed and feed["flip"].tolist() == [True]
    shapes = feed["pass_shapes"]
    assert feed["pixels"].size == int(np.prod(shapes, axis=1).sum())
    images = [x for _, inputs, _ in network for x in inputs["image"]]
    logits = [x for _, _, out in network for x in out["logits"]]
    # Runner batches group equal shapes: match the passes by their pixels, in plan order.
    starts = np.concatenate([[0], np.cumsum(np.prod(shapes, axis=1))])
    order = []
    for i, shape in enumerate(shapes):
        flat = feed["pixels"][starts[i]:starts[i + 1]].reshape(shape)
        order.append(next(j for j, x in enumerate(images) if x.shape == flat.shape
                          and np.array_equal(x, flat)))
    for k, p in enumerate(feed["region_pass"]):
        assert tuple(feed["region_logit_size"][k]) == logits[order[p]].shape[1:]
        assert feed["region_flipped_pass"][k] == p + 1


@pytest.mark.parametrize("mode,providers,expected", [
    ("auto", ["triton:python", "KIND_CPU"], None),
    ("auto", ["triton:onnxruntime", "KIND_GPU", "tensorrt"], "m__segment"),
    ("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"], "m__segment"),
    ("on", ["triton:python", "KIND_CPU"], "m__segment"),
    ("off", ["triton:onnxruntime", "KIND_GPU"], None),
])
def test_served_merge_where_the_setting_wants_it(model_metadata, mode, providers,
                                                 expected) -> None:
    """``auto`` sends an image to the served merge only where the network runs on a GPU (on
    CPU instances the merge graph is slower than the gateway's merge); ``on`` always; ``off``
    never; a backend without one (the embedded backend) never."""
    from types import SimpleNamespace

    from service.tasks.segmentation.merge_graph import served_merge_model

    meta = model_metadata[SEG_CITYSCAPES].model_copy(update={"name": "m"})
    backend = SimpleNamespace(served_merge=lambda name: f"{name}__segment",
                              providers=lambda: {"m": providers})
    runner = SimpleNamespace(settings=Settings(merge_on_device=mode), backend=backend)
    assert served_merge_model(meta, runner) == expected
    bare = SimpleNamespace(settings=runner.settings, backend=SimpleNamespace(providers=backend.providers))
    assert served_merge_model(meta, bare) is None
