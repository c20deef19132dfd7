"""Triton python-backend ``model.py`` that serves an ONNX graph through ONNX Runtime on the CPU.

This file is a *template*: :mod:`model_export.triton_cpu` copies it verbatim to
``<repo>/<name>/1/model.py`` of a CPU test repository. It runs inside Triton's
``triton_python_backend_stub``, which embeds the system ``libpython3.11`` and does not see any
virtual environment: ``numpy`` and ``onnxruntime`` come from the directory named by the
``pydeps`` config parameter, which this module puts on ``sys.path`` (see below).

Config parameters (``parameters { key: ... value { string_value: ... } }``):

* ``onnx_model``: path of the ONNX file (absolute, or relative to the model's directory);
* ``pydeps``: directory with ``numpy<2`` and ``onnxruntime`` (``pip install --target``);
* ``ort_intra_threads``: optional ONNX Runtime intra-op thread count (0: ORT's default; it also
  bounds OpenVINO's threads);
* ``hrnet_metadata``: the entry's metadata (the contract). Its ``precision`` block picks the
  engine as the gateway's embedded backend does: ONNX Runtime, or OpenVINO (``openvino`` in
  ``pydeps``) compiled with the tier's precision as its inference hint (BF16, or FP32 for FP32
  and INT8 graphs: OpenVINO's default on AVX512-BF16/AMX CPUs would be BF16).

The python backend imports this file *before* its own ``triton_python_backend_utils`` (which
imports numpy), so the ``pydeps`` directory is put on ``sys.path`` at import time, read from the
sibling ``../config.pbtxt`` (or the ``HRNET_TRITON_PYDEPS`` environment variable); a
``PYTHONPATH`` would not help because the stub's embedded interpreter runs isolated from the
environment's Python variables.

With dynamic batching Triton hands :meth:`TritonPythonModel.execute` several requests at once.
Requests whose inputs have equal per-item shapes are concatenated along the batch axis and run in
one ONNX Runtime call; the outputs are split back per request. Models with ``max_batch_size <= 1``
(detection: one image per call, outputs with a per-image number of boxes) run each request on its
own. A model may have several inputs of different dtypes (detection: FP32 ``image`` and INT64
``image_size``) and several outputs; every configured output is returned. One bad request gets an
error response without failing its neighbours.

Warm-up samples (``model_warmup`` in the config, data files under ``<model>/warmup/``) are run by
Triton itself through :meth:`TritonPythonModel.execute`, like any request.
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

_PYDEPS_RE = re.compile(r'key:\s*"pydeps"\s*value\s*\{\s*string_value:\s*"((?:[^"\\]|\\.)*)"')


def _pydeps_from_config() -> str | None:
    """The ``pydeps`` parameter of this model's config.pbtxt (``<model>/1/model.py`` -> ``<model>/``)."""
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.pbtxt")
    try:
        with open(config, encoding="utf-8") as f:
            match = _PYDEPS_RE.search(f.read())
    except OSError:
        return None
    return match.group(1).encode().decode("unicode_escape") if match else None


_PYDEPS = os.environ.get("HRNET_TRITON_PYDEPS") or _pydeps_from_config()
if _PYDEPS and _PYDEPS not in sys.path:
    sys.path.insert(0, _PYDEPS)

# Filled by initialize(): the stub's utilities import numpy, which is only importable after
# the pydeps directory is on sys.path.
pb_utils: Any = None
np: Any = None


def _param(config: dict, key: str, default: str | None = None) -> str | None:
    """A string parameter of the model configuration."""
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


class TritonPythonModel:
    """One ONNX Runtime session (or OpenVINO compiled model) per model instance."""

    def initialize(self, args: dict) -> None:
        """Load the ONNX graph named by the config (called once per instance by Triton)."""
        global pb_utils, np
        config = json.loads(args["model_config"])
        self.name = config.get("name", "?")
        model_dir = args["model_repository"]  # the model's own directory
        pydeps = _param(config, "pydeps")
        if pydeps and pydeps not in sys.path:
            sys.path.insert(0, pydeps)
        try:
            import numpy
            import onnxruntime
            import triton_python_backend_utils
        except ImportError as exc:  # no pb_utils yet: a plain exception fails the load clearly
            raise RuntimeError(
                f"{self.name}: cannot import numpy/onnxruntime (pydeps={pydeps!r}): {exc}"
            ) from exc
        np, pb_utils = numpy, triton_python_backend_utils

        onnx_path = _param(config, "onnx_model")
        if onnx_path is None:
            raise pb_utils.TritonModelException(f"{self.name}: config parameter 'onnx_model' missing")
        if not os.path.isabs(onnx_path):
            onnx_path = os.path.join(model_dir, onnx_path)
        if not os.path.isfile(onnx_path):
            raise pb_utils.TritonModelException(f"{self.name}: ONNX file not found: {onnx_path}")

        threads = int(_param(config, "ort_intra_threads", "0") or 0)
        precision = json.loads(_param(config, "hrnet_metadata", "{}") or "{}").get("precision") or {}
        self.precision = precision.get("precision", "fp32")
        self.engine = precision.get("engine", "onnxruntime")
        if self.engine == "openvino":
            self._run_graph, graph_outputs = self._openvino(onnx_path, threads)
        elif self.engine == "onnxruntime":
            options = onnxruntime.SessionOptions()
            if threads > 0:
                options.intra_op_num_threads = threads
            session = onnxruntime.InferenceSession(
                onnx_path, sess_options=options, providers=["CPUExecutionProvider"]
            )
            self._run_graph = lambda names, feeds: session.run(names, feeds)
            graph_outputs = {o.name for o in session.get_outputs()}
        else:
            raise pb_utils.TritonModelException(
                f"{self.name}: engine {self.engine!r} cannot run in the CPU twin")
        # Triton only merges requests up to max_batch_size; at 1 (or 0: no batch axis) every
        # request runs alone, which also suits outputs whose per-item size varies (detections).
        self.batchable = int(config.get("max_batch_size", 0)) > 1
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        self.input_dtypes = {
            i["name"]: pb_utils.triton_string_to_numpy(i["data_type"]) for i in config["input"]
        }
        missing = [n for n in self.output_names if n not in graph_outputs]
        if missing:
            raise pb_utils.TritonModelException(
                f"{self.name}: outputs {missing} of config.pbtxt are not outputs of {onnx_path}"
            )

    def _openvino(self, onnx_path: str, threads: int) -> tuple[Any, set]:
        """OpenVINO on the CPU with the tier's precision hint (the gateway's
        ``service.runtime.backends.openvino`` settings)."""
        try:
            import openvino
        except ImportError as exc:
            raise pb_utils.TritonModelException(
                f"{self.name}: an OpenVINO entry needs openvino in pydeps: {exc}") from exc
        hints = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
        if self.precision not in hints:
            raise pb_utils.TritonModelException(
                f"{self.name}: OpenVINO does not serve {self.precision!r}")
        props: dict = {"INFERENCE_PRECISION_HINT": hints[self.precision],
                       "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if threads > 0:
            props["INFERENCE_NUM_THREADS"] = threads
        core = openvino.Core()
        compiled = core.compile_model(core.read_model(onnx_path), "CPU", props)

        def run(names: list, feeds: dict) -> list:
            result = compiled.create_infer_request().infer(feeds)
            by_name = {port.get_any_name(): value for port, value in result.items()}
            return [np.array(by_name[n]) for n in names]

        return run, {o.get_any_name() for o in compiled.outputs}

    def _inputs(self, request: Any) -> dict:
        """The request's input arrays by name, in the configured dtype."""
        arrays = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"input '{name}' missing")
            arrays[name] = np.ascontiguousarray(tensor.as_numpy(), dtype=self.input_dtypes[name])
        return arrays

    def _run(self, feeds: dict) -> list:
        """One ONNX Runtime call; returns outputs in config order."""
        try:
            return self._run_graph(self.output_names, feeds)
        except Exception as exc:  # engines raise their own exception types; report them as Triton's
            raise pb_utils.TritonModelException(f"{self.name}: {self.engine} failed: {exc}") from exc

    def execute(self, requests: list) -> list:
        """Run a list of requests, batching those with equal per-item input shapes (models with
        ``max_batch_size > 1``; otherwise one ONNX Runtime call per request)."""
        responses: list = [None] * len(requests)
        groups: dict[Any, list[tuple[int, dict]]] = {}
        for index, request in enumerate(requests):
            try:
                arrays = self._inputs(request)
            except Exception as exc:
                responses[index] = pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{self.name}: bad request: {exc}")
                )
                continue
            key = tuple((n, arrays[n].shape[1:]) for n in self.input_names) if self.batchable else index
            groups.setdefault(key, []).append((index, arrays))

        for members in groups.values():
            sizes = ([arrays[self.input_names[0]].shape[0] for _, arrays in members]
                     if len(members) > 1 else [])
            feeds = {
                n: members[0][1][n] if len(members) == 1
                else np.concatenate([arrays[n] for _, arrays in members], axis=0)
                for n in self.input_names
            }
            try:
                outputs = self._run(feeds)
            except Exception as exc:
                for index, _ in members:
                    responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            if len(members) == 1:  # all of it (no batch axis to split when max_batch_size is 0)
                responses[members[0][0]] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(out))
                    for name, out in zip(self.output_names, outputs, strict=True)])
                continue
            start = 0
            for (index, _), size in zip(members, sizes, strict=True):
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + size]))
                    for name, out in zip(self.output_names, outputs, strict=True)
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += size
        return responses

    def finalize(self) -> None:
        """Drop the session (called by Triton on unload)."""
        self._run_graph = None
