"""Triton python-backend ``model.py`` of ``<model>__segment``: a segmentation request's passes
run through the network and merged on the server, so that only the label map leaves it.

This file is a *template*: :mod:`model_export.served_merge` copies it verbatim to
``<repo>/<model>__segment/1/model.py``. It is a BLS (business logic scripting) model: it calls
two models of the same server, the network ``<model>`` and the merge graph ``<model>__merge``
(``1/merge.onnx`` of the entry, on Triton's ONNX Runtime backend), so both run where Triton put
them (GPU instances on a GPU server) and the network's float logits never cross the network.

One request is one image of a gateway request (service/tasks/segmentation/merge_graph.py,
``served_feed``):

* ``pixels`` FP32 ``[sum C*H*W]`` and ``pass_shapes`` INT64 ``[P, 3]``: the plan's passes in
  order, flattened one after the other (Triton tensors have one shape; passes of different
  scales have different ones);
* ``region_pass`` / ``region_flipped_pass`` INT64 ``[N]``: each merge region's pass and its
  mirrored pass (-1: no flip); ``region_logit_size`` INT64 ``[N, 2]``: the logit size the
  tables were made for, checked against what the network answers;
* ``exp_limit`` FP32 ``[1]``: the largest logit whose ``exp``, summed over the scales, stays
  finite in float32 (beyond it ``merged`` is False and the gateway merges exactly itself);
* every other merge-graph input (the gather tables) as the graph takes it; scalars as ``[1]``.

Passes of one shape are stacked into network calls of at most ``network_max_batch`` passes and
``max_batch_pixels`` pixels (the gateway's batching rule); logits are padded into the merge
graph's ``logits`` / ``logits_flipped`` exactly as the gateway's ``merge_feed`` pads them.

Outputs: ``labels`` UINT8 ``[H, W]``, ``confidence`` FP32 (``[H, W]`` when asked, else
``[0, 0]``), ``merged`` BOOL ``[1]``.

Config parameters: ``network``, ``network_input``, ``network_output``, ``network_max_batch``,
``max_batch_pixels``, ``merge_model``, and ``hrnet_served_merge`` (the network's name, which is
how the gateway discovers this model). In the CPU twin, ``pydeps`` names the directory holding
numpy (as for :mod:`model_export.triton_cpu.model`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

# The pydeps lookup is model_export/triton_cpu/model.py's: each template is copied alone into
# its model's folder and imported by the stub before anything else, so they cannot share it.
_PYDEPS_RE = re.compile(r'key:\s*"pydeps"\s*value\s*\{\s*string_value:\s*"((?:[^"\\]|\\.)*)"')


def _pydeps_from_config() -> str | None:
    """The ``pydeps`` parameter of this model's config.pbtxt, if any (the CPU twin's)."""
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.pbtxt")
    try:
        with open(config, encoding="utf-8") as f:
            match = _PYDEPS_RE.search(f.read())
    except OSError:
        return None
    return match.group(1).encode().decode("unicode_escape") if match else None


# The stub imports this file before its own utilities (which import numpy): put pydeps first.
_PYDEPS = os.environ.get("HRNET_TRITON_PYDEPS") or _pydeps_from_config()
if _PYDEPS and _PYDEPS not in sys.path:
    sys.path.insert(0, _PYDEPS)

pb_utils: Any = None
np: Any = None

#: Inputs of this model that are not merge-graph inputs.
_OWN_INPUTS = ("pixels", "pass_shapes", "region_pass", "region_flipped_pass",
               "region_logit_size", "exp_limit")
_OUTPUTS = ("labels", "confidence")


class _Refused(Exception):
    """A request this model cannot merge (a clear message back to the caller)."""


class TritonPythonModel:
    """Runs a request's passes through the network, then the merge graph, by BLS."""

    def initialize(self, args: dict) -> None:
        """Read the configuration (called once per instance by Triton)."""
        global pb_utils, np
        import numpy
        import triton_python_backend_utils

        np, pb_utils = numpy, triton_python_backend_utils
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.name = config.get("name", "?")
        self.network = params["network"]
        self.network_input = params["network_input"]
        self.network_output = params["network_output"]
        self.max_batch = max(1, int(params.get("network_max_batch") or 1))
        self.max_pixels = max(1, int(params.get("max_batch_pixels") or 2_097_152))
        self.merge_model = params["merge_model"]
        self.table_names = [i["name"] for i in config["input"] if i["name"] not in _OWN_INPUTS]
        # Outputs on the host (numpy): a GPU network's logits are copied once, on the server.
        memory = getattr(pb_utils, "PreferredMemory", None)
        self._cpu = ({"preferred_memory": memory(pb_utils.TRITONSERVER_MEMORY_CPU, 0)}
                     if memory is not None else {})

    def _call(self, model: str, inputs: dict, outputs: list[str]) -> list:
        """One BLS call; its outputs as numpy arrays, in ``outputs`` order."""
        request = pb_utils.InferenceRequest(
            model_name=model, requested_output_names=outputs,
            inputs=[pb_utils.Tensor(k, np.ascontiguousarray(v)) for k, v in inputs.items()],
            **self._cpu)
        response = request.exec()
        if response.has_error():
            raise pb_utils.TritonModelException(
                f"{self.name}: {model} failed: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, n).as_numpy() for n in outputs]

    def _logits(self, pixels: Any, shapes: Any) -> list:
        """Every pass's logits ``(C, h, w)``, in pass order; passes of one shape share calls."""
        sizes = np.prod(shapes, axis=1)
        if int(sizes.sum()) != pixels.size:
            raise _Refused(f"pixels has {pixels.size} values; pass_shapes say {int(sizes.sum())}")
        starts = np.concatenate([[0], np.cumsum(sizes)])
        groups: dict[tuple, list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(tuple(int(v) for v in shape), []).append(i)
        logits: list = [None] * len(shapes)
        for shape, members in groups.items():
            limit = max(1, min(self.max_batch, self.max_pixels // max(1, shape[1] * shape[2])))
            for at in range(0, len(members), limit):
                chunk = members[at:at + limit]
                batch = np.stack([pixels[starts[i]:starts[i + 1]].reshape(shape) for i in chunk])
                (out,) = self._call(self.network, {self.network_input: batch},
                                    [self.network_output])
                del batch
                for j, i in enumerate(chunk):
                    logits[i] = np.array(out[j])
        return logits

    def _merge(self, request: Any) -> tuple:
        """(labels, confidence, merged) of one request."""
        get = lambda n: pb_utils.get_input_tensor_by_name(request, n)  # noqa: E731
        missing = [n for n in (*_OWN_INPUTS, *self.table_names) if get(n) is None]
        if missing:
            raise _Refused(f"inputs missing: {', '.join(missing)}")
        shapes = get("pass_shapes").as_numpy().astype(np.int64).reshape(-1, 3)
        logits = self._logits(get("pixels").as_numpy().reshape(-1), shapes)
        limit = float(get("exp_limit").as_numpy().reshape(-1)[0])
        top = max(float(np.max(lg)) for lg in logits)
        bottom = min(float(np.min(lg)) for lg in logits)
        if not (np.isfinite(top) and np.isfinite(bottom) and top < limit):
            return (np.zeros((0, 0), np.uint8), np.zeros((0, 0), np.float32),
                    np.array([False]))
        region = get("region_pass").as_numpy().reshape(-1)
        flipped = get("region_flipped_pass").as_numpy().reshape(-1)
        sizes = get("region_logit_size").as_numpy().reshape(-1, 2)
        n_cls = int(logits[0].shape[0])
        for k, p in enumerate(region):
            if tuple(logits[p].shape[1:]) != tuple(int(v) for v in sizes[k]):
                raise _Refused(f"pass {int(p)}: the network answered logits of "
                               f"{tuple(logits[p].shape[1:])}, the tables assume "
                               f"{tuple(int(v) for v in sizes[k])}")
        h4, w4 = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        flip = bool((flipped >= 0).any())
        feed = {"logits": np.zeros((len(region), n_cls, h4, w4), np.float32),
                "logits_flipped": np.zeros((len(region), n_cls, h4 if flip else 1, w4),
                                           np.float32)}
        for k, (p, q) in enumerate(zip(region, flipped)):  # the gateway's merge_feed padding
            ch, cw = logits[p].shape[1:]
            feed["logits"][k, :, :ch, :cw] = logits[p]
            if q >= 0:
                feed["logits_flipped"][k, :, :ch, :cw] = logits[q]
        del logits
        for name in self.table_names:
            feed[name] = get(name).as_numpy()
        labels, confidence = self._call(self.merge_model, feed, list(_OUTPUTS))
        return np.array(labels), np.array(confidence), np.array([True])

    def execute(self, requests: list) -> list:
        """Each request on its own (one image each); one failing does not fail the others."""
        responses = []
        for request in requests:
            try:
                labels, confidence, merged = self._merge(request)
            except Exception as exc:  # a clear error for this request, the model stays up
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{self.name}: {exc}")))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("labels", labels.astype(np.uint8)),
                pb_utils.Tensor("confidence", confidence.astype(np.float32)),
                pb_utils.Tensor("merged", merged.astype(bool))]))
        return responses
