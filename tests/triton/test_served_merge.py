"""The official merge on the Triton server (``<model>__segment`` calling ``<model>`` and
``<model>__merge``, model_export/served_merge/): the gateway sends a request's passes and gets
back only the uint8 label map (and the confidence), never float logits.

A real tritonserver serves the CPU twins of the session's segmentation entries (the same
``model.onnx`` and ``merge.onnx`` on ONNX Runtime in the python backend; the BLS model as it is).
Checked: the entries written by the export, parity with the official procedure on the cases of
THE parity suite (tests/service/test_segment_parity.py, same threshold), label maps and
confidence equal to the embedded backend running the same merge graph, what crosses from Triton
to the gateway, and that ``merge_on_device=off`` still merges in the gateway.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.app import create_app
from service.contract import MERGE_MODEL_SUFFIX, SERVED_MERGE_PARAMETER, SERVED_MERGE_SUFFIX
from service.settings import Settings
from tests.service.test_segment_parity import CASES, PHOTOS, Official, _png
from tests.triton.harness import TritonServer

SEG_MODELS = ("seg_cityscapes", "seg_pascal", "seg_lip")


@pytest.fixture(scope="module")
def merge_triton(model_repo: Path, triton_install, tmp_path_factory) -> Iterator[TritonServer]:
    """A tritonserver of the session's ``model_repo`` twins alone: the networks, their served
    merges, and ``face_300w``."""
    from model_export.triton_cpu import write_cpu_repository

    dst = tmp_path_factory.mktemp("served_merge_repo")
    written = {p.name for p in write_cpu_repository(model_repo, dst, triton_install.pydeps)}
    assert {f"{m}{s}" for m in SEG_MODELS for s in (MERGE_MODEL_SUFFIX, SERVED_MERGE_SUFFIX)} <= written
    log = tmp_path_factory.mktemp("served_merge_logs") / "tritonserver.log"
    server = TritonServer(triton_install, dst, log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _client(settings: Settings) -> Any:
    """A TestClient whose backend records every call: (model, {output: (dtype, shape)})."""
    client = TestClient(create_app(settings))
    client.__enter__()
    backend = client.app.state.backend
    real, client.calls = backend.infer, []

    async def recording(model: str, inputs: dict) -> dict:
        out = await real(model, inputs)
        client.calls.append((model, {k: (v.dtype.str, v.shape) for k, v in out.items()}))
        return out

    backend.infer = recording
    return client


@pytest.fixture(scope="module")
def clients(model_repo: Path, merge_triton: TritonServer) -> Iterator[dict[str, Any]]:
    """'embedded' (the merge graph on ONNX Runtime CPU: merge_on_device=on), 'grpc' and 'http'
    (Triton, served merge: 'on', as these are CPU instances), 'grpc_auto' (the default 'auto':
    CPU instances, so the gateway merges) and 'grpc_off' (merge_on_device=off)."""
    common = dict(repository=model_repo, max_passes=512, request_timeout_s=300)
    settings = {
        "embedded": Settings(backend="embedded", merge_on_device="on", ort_intra_threads=1,
                             ort_inter_threads=1, **common),
        **{p: Settings(backend="triton", triton_url=merge_triton.url(p), triton_protocol=p,
                       merge_on_device="on", **common) for p in ("grpc", "http")},
        **{f"grpc_{mode}": Settings(backend="triton", triton_url=merge_triton.url("grpc"),
                                    triton_protocol="grpc", merge_on_device=mode, **common)
           for mode in ("auto", "off")},
    }
    made = {k: _client(s) for k, s in settings.items()}
    try:
        yield made
    finally:
        for c in made.values():
            c.__exit__(None, None, None)


def _segment(client: Any, rgb: np.ndarray, options: dict, accept: str = "image/png") -> Any:
    r = client.post("/segment", files={"file": ("x.png", _png(rgb), "image/png")},
                    data={"options": json.dumps(options)}, headers={"Accept": accept})
    assert r.status_code == 200, r.text
    return r


def _labels(r: Any) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(r.content)))


def test_export_writes_the_served_merge_beside_each_entry(model_repo: Path) -> None:
    from tritonclient.grpc import model_config_pb2 as mc

    from model_export.repository import read_config

    for name in SEG_MODELS:
        seg = read_config(model_repo / f"{name}{SERVED_MERGE_SUFFIX}" / "config.pbtxt")
        merge = read_config(model_repo / f"{name}{MERGE_MODEL_SUFFIX}" / "config.pbtxt")
        assert seg.backend == "python" and seg.parameters[SERVED_MERGE_PARAMETER].string_value == name
        kinds = [(g.kind, g.count) for g in seg.instance_group]
        assert kinds == [(mc.ModelInstanceGroup.KIND_CPU, 2)]  # one request's passes, another's merge
        assert seg.parameters["merge_model"].string_value == merge.name
        assert (model_repo / merge.name / "1" / "model.onnx").is_file()
        assert merge.platform == "onnxruntime_onnx" and merge.max_batch_size == 0
        flags = {i.name for i in merge.input if list(i.dims) == [1]}
        assert flags == {"flip", "take_exp", "with_confidence", "final_identity"}
        assert [o.name for o in seg.output] == ["labels", "confidence", "merged"]
        assert "logits" not in {i.name for i in seg.input}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_served_merge_matches_official(case, clients: dict[str, Any], exported_models) -> None:
    """THE parity suite's cases through Triton's served merge (gRPC), same threshold; the
    embedded backend's merge graph gives the very same label map."""
    import torch

    torch.set_num_threads(1)
    cid, name, scales, flip, window, photos = case
    exp = exported_models[name]
    official = Official(exp.model.eval(), exp.metadata)
    variant = window or exp.metadata.segmentation.window
    opts = {"model": name, "scales": scales, "flip": flip, **({"window": window} if window else {})}
    for photo in photos:
        rgb = np.ascontiguousarray(PHOTOS[photo]()[:, :, :3])
        ref = official.predict(rgb, scales, flip, variant)
        grpc = clients["grpc"]
        grpc.calls.clear()
        got = _labels(_segment(grpc, rgb, opts))
        assert [m for m, _ in grpc.calls] == [f"{name}{SERVED_MERGE_SUFFIX}"]
        agree = float((got == ref).mean())
        print(f"served-merge parity {cid} {photo}: agreement {agree * 100:.4f}%")
        assert got.shape == ref.shape and agree >= 0.999, f"{cid}/{photo}: {agree:.5f}"
        assert np.array_equal(got, _labels(_segment(clients["embedded"], rgb, opts)))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_only_label_maps_cross_from_triton(clients: dict[str, Any], protocol: str) -> None:
    """6 scales + flip with windows and the confidence: one call, whose answer is the uint8 label
    map of the image's size, its float32 confidence and the ``merged`` flag; nothing else. The
    JSON answer (labels, fractions, confidence statistics) equals the embedded graph merge's."""
    rgb = np.ascontiguousarray(PHOTOS["coffee"]()[:, :, :3])
    opts = {"model": "seg_cityscapes", "scales": [0.5, 0.75, 1.0, 1.25, 1.5, 1.75], "flip": True,
            "confidence": True}
    client = clients[protocol]
    client.calls.clear()
    body = _segment(client, rgb, opts, accept="application/json").json()
    (model, outputs), = client.calls
    h, w = rgb.shape[:2]
    assert model == f"seg_cityscapes{SERVED_MERGE_SUFFIX}"
    assert outputs == {"labels": ("|u1", (h, w)), "confidence": ("<f4", (h, w)),
                       "merged": ("|b1", (1,))}
    expected = _segment(clients["embedded"], rgb, opts, accept="application/json").json()
    for key in ("classes", "label_map", "confidence", "image_size"):
        assert body[key] == expected[key], key


@pytest.mark.parametrize("mode", ["off", "auto"])
def test_off_and_auto_on_cpu_instances_merge_in_the_gateway(clients: dict[str, Any],
                                                             mode: str) -> None:
    """merge_on_device=off, and auto with CPU instances (where the served merge measured
    slower): the network's logits come back, batch by batch, and the gateway merges; the label
    map equals the served merge's (both within THE parity threshold)."""
    rgb = np.ascontiguousarray(PHOTOS["chelsea"]()[:, :, :3])
    opts = {"model": "seg_pascal", "scales": [0.75, 1.0, 1.5], "flip": True}
    client = clients[f"grpc_{mode}"]
    assert client.app.state.backend.served_merge("seg_pascal") == f"seg_pascal{SERVED_MERGE_SUFFIX}"
    client.calls.clear()
    plain = _labels(_segment(client, rgb, opts))
    assert {m for m, _ in client.calls} == {"seg_pascal"}
    assert all(out["logits"][0] == "<f4" for _, out in client.calls)
    served = _labels(_segment(clients["grpc"], rgb, opts))
    assert float((plain == served).mean()) >= 0.999


def test_a_batch_of_images_is_merged_on_the_server(clients: dict[str, Any]) -> None:
    """Several images in one request: one served merge per image, answers in order, equal to
    the single-image answers."""
    rgbs = [np.ascontiguousarray(PHOTOS[p]()[::2, ::2, :3]) for p in ("coffee", "astronaut")]
    client = clients["grpc"]
    client.calls.clear()
    r = client.post("/segment", files=[("file", (f"{i}.png", _png(x), "image/png"))
                                       for i, x in enumerate(rgbs)],
                    data={"options": json.dumps({"model": "seg_lip", "flip": True})},
                    headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    assert [m for m, _ in client.calls] == [f"seg_lip{SERVED_MERGE_SUFFIX}"] * 2
    single = [_segment(client, x, {"model": "seg_lip", "flip": True},
                       accept="application/json").json() for x in rgbs]
    assert [b["classes"] for b in r.json()["results"]] == [s["classes"] for s in single]
