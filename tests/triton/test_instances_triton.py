"""Mask R-CNN, Cascade R-CNN and Cascade Mask R-CNN, each exported from an official
HRNet-Object-Detection, an MMDetection 2.x and a 3.x file, through a real tritonserver (their CPU
twins: the same ``model.onnx`` run by ONNX Runtime in Triton's python backend, four outputs): the
gateway answers what the embedded backend answers (boxes and scores within 1e-4, masks IoU >=
0.999)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from tests.conftest import CASCADE_MASK_MODEL, CASCADE_MODEL, INSTANCE_MODELS, MASK_MODEL
from tests.helpers import encode_png, photo, serve
from tests.triton.harness import TritonServer


@pytest.fixture(scope="module")
def instance_triton(instance_repo: Path, triton_install, tmp_path_factory) -> Iterator[TritonServer]:
    """A tritonserver of the instance models' CPU twins alone (the session server keeps its
    start-up time). One entry per head keeps its warm-up sample (the four-output graph warmed
    up with its ``image_size`` file); the other six load without, the first request warming
    them (nine warm-ups of up to 100 masks each would cost more than the tests)."""
    from model_export.triton_cpu import write_cpu_variant

    dst = tmp_path_factory.mktemp("instance_triton_repo")
    for name in INSTANCE_MODELS:
        write_cpu_variant(instance_repo / name, dst, triton_install.pydeps,
                          warmup=name in (MASK_MODEL, CASCADE_MODEL, CASCADE_MASK_MODEL))
    log = tmp_path_factory.mktemp("instance_triton_logs") / "tritonserver.log"
    server = TritonServer(triton_install, dst, log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def urls(instance_repo: Path, instance_triton: TritonServer) -> Iterator[dict[str, str]]:
    from service.settings import Settings

    settings = {
        "embedded": Settings(backend="embedded", repository=instance_repo, max_concurrency=1,
                             ort_intra_threads=1, request_timeout_s=300),
        "grpc": Settings(backend="triton", triton_url=instance_triton.url("grpc"),
                         triton_protocol="grpc", repository=instance_repo, max_concurrency=1,
                         request_timeout_s=300),
    }
    with ExitStack() as stack:
        yield {k: stack.enter_context(serve(s)) for k, s in settings.items()}


def _detect(url: str, png: bytes, **options: object) -> dict:
    r = httpx.post(f"{url}/detect", files={"file": ("p.png", png, "image/png")},
                   data={"options": json.dumps(options)}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def _mask(rle: dict) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def _options(name: str) -> dict:
    """Masks from every mask head; one entry also merges a flip and a second scale."""
    if "mask_rcnn" not in INSTANCE_MODELS[name][0]:
        return {}
    return {"masks": True, **({"flip": True, "scales": [0.75]} if name == CASCADE_MASK_MODEL
                              else {})}


@pytest.mark.parametrize("name", list(INSTANCE_MODELS))
def test_triton_answers_what_embedded_answers(urls: dict[str, str], name: str) -> None:
    options = _options(name)
    png = encode_png(photo("coffee")[::2, ::2].copy())  # 200 x 300
    expected = _detect(urls["embedded"], png, model=name, **options)
    got = _detect(urls["grpc"], png, model=name, **options)
    assert got["options"] == expected["options"]
    a, b = expected["detections"], got["detections"]
    assert len(a) == len(b) > 0
    assert [d["label_index"] for d in a] == [d["label_index"] for d in b]
    assert np.abs(np.array([d["box"] for d in a]) - [d["box"] for d in b]).max() <= 1e-4
    assert np.abs(np.array([d["score"] for d in a]) - [d["score"] for d in b]).max() <= 1e-4
    if options.get("masks"):
        assert all("mask" in d for d in b)
        for d, e in zip(a, b):
            m, n = _mask(d["mask"]["rle"]), _mask(e["mask"]["rle"])
            union = np.logical_or(m, n).sum()
            assert union == 0 or np.logical_and(m, n).sum() / union >= 0.999
    else:
        assert all("mask" not in d for d in b)
    listed = {k: {m["name"]: m["detection"] for m in httpx.get(f"{u}/v1/models").json()["models"]}
              for k, u in urls.items()}
    assert listed["grpc"][name] == listed["embedded"][name]
    assert listed["grpc"][name]["cascade_stages"] == (3 if "cascade" in name else 1)
