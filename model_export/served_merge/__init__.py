"""Triton's served merge: a segmentation entry's passes run *and* merged on the server.

For a segmentation entry ``<model>`` whose metadata names a merge graph, two more Triton models
sit beside it in the repository:

* ``<model>__merge``: the merge graph (model_export/onnx/merge.py) on Triton's ONNX Runtime
  backend, on the entry's instance kind (GPU instances on a GPU server).
* ``<model>__segment``: a python-backend BLS model (the template :mod:`.model`) that takes one
  image's passes and the merge tables, calls ``<model>`` and ``<model>__merge`` and answers only
  the ``uint8`` label map (and the confidence). The gateway finds it by its
  ``hrnet_served_merge`` parameter and then sends segmentation requests there
  (service/tasks/segmentation/merge_graph.py, ``served_merge``): no float logits over the
  network (measured by benchmarks/bench_device_merge.py --triton).

Neither has the ``hrnet_metadata`` parameter, so neither is listed as a model. The CPU twin
(:mod:`model_export.triton_cpu`) serves ``__merge`` like any ONNX entry and copies
``__segment`` with its ``pydeps``.
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence

from tritonclient.grpc import model_config_pb2 as mc

from model_export.repository import ONNX_FILENAME, VERSION, TritonOptions, write_config
from service.contract import (
    IMAGE, LOGITS, MERGE_MODEL_SUFFIX, MERGE_OUTPUTS, SERVED_MERGE_INPUTS, SERVED_MERGE_PARAMETER,
    SERVED_MERGE_SUFFIX, ModelMetadata, SegmentationMetadata,
)

#: The BLS template copied to ``<model>__segment/1/model.py``.
TEMPLATE = Path(__file__).with_name("model.py")
#: Network pixels per BLS network call (the gateway's ``HRNET_MAX_BATCH_PIXELS`` default).
MAX_BATCH_PIXELS = 2_097_152

_ONNX_TYPES = {1: mc.TYPE_FP32, 7: mc.TYPE_INT64, 9: mc.TYPE_BOOL}  # onnx.TensorProto codes
_SERVED_SPECS = {
    "pixels": (mc.TYPE_FP32, [-1]), "pass_shapes": (mc.TYPE_INT64, [-1, 3]),
    "region_pass": (mc.TYPE_INT64, [-1]), "region_flipped_pass": (mc.TYPE_INT64, [-1]),
    "region_logit_size": (mc.TYPE_INT64, [-1, 2]), "exp_limit": (mc.TYPE_FP32, [1]),
}
assert tuple(_SERVED_SPECS) == SERVED_MERGE_INPUTS


@functools.cache
def merge_graph_inputs() -> Mapping[str, tuple[int, tuple[int, ...]]]:
    """Name -> (Triton data type, dims: -1 where dynamic) of every merge-graph input (the flags
    are ``[1]``: Triton has no scalar inputs for models without a batch axis). The graph is a
    constant of this code, so it is built for this once per process, not per config."""
    from model_export.onnx.merge import build_merge_graph

    graph = build_merge_graph().graph
    return MappingProxyType({
        i.name: (_ONNX_TYPES[i.type.tensor_type.elem_type],
                 tuple(d.dim_value if d.HasField("dim_value") else -1
                       for d in i.type.tensor_type.shape.dim))
        for i in graph.input})


def _add_input(cfg: mc.ModelConfig, name: str, dtype: int, dims: Sequence[int]) -> None:
    cfg.input.add(name=name, data_type=dtype, dims=list(dims))


def _add_outputs(cfg: mc.ModelConfig) -> None:
    cfg.output.add(name=MERGE_OUTPUTS[0], data_type=mc.TYPE_UINT8, dims=[-1, -1])
    cfg.output.add(name=MERGE_OUTPUTS[1], data_type=mc.TYPE_FP32, dims=[-1, -1])


def merge_config(name: str, kind: int, count: int = 1) -> mc.ModelConfig:
    """``<name>__merge``: the merge graph on the ONNX Runtime backend, instances of ``kind``."""
    cfg = mc.ModelConfig(name=name + MERGE_MODEL_SUFFIX, platform="onnxruntime_onnx",
                         backend="onnxruntime", max_batch_size=0)
    for key, (dtype, dims) in merge_graph_inputs().items():
        _add_input(cfg, key, dtype, dims)
    _add_outputs(cfg)
    cfg.instance_group.add(count=count, kind=kind)
    return cfg


def segment_config(metadata: SegmentationMetadata, max_batch_pixels: int = MAX_BATCH_PIXELS,
                   instances: int = 2) -> mc.ModelConfig:
    """``<name>__segment``: the BLS model running ``metadata``'s passes and merge, on
    ``instances`` CPU instances (a BLS call blocks its instance: with two, one request's passes
    run while another's merge does)."""
    name = metadata.name
    cfg = mc.ModelConfig(name=name + SERVED_MERGE_SUFFIX, backend="python", max_batch_size=0)
    for key, (dtype, dims) in _SERVED_SPECS.items():
        cfg.input.add(name=key, data_type=dtype, dims=dims)
    for key, (dtype, dims) in merge_graph_inputs().items():
        if key not in ("logits", "logits_flipped"):  # made on the server from the passes
            _add_input(cfg, key, dtype, dims)
    _add_outputs(cfg)
    cfg.output.add(name="merged", data_type=mc.TYPE_BOOL, dims=[1])
    # The BLS itself only orchestrates: the network and the merge run on their own instances.
    cfg.instance_group.add(count=max(1, instances), kind=mc.ModelInstanceGroup.KIND_CPU)
    network_input = next((s.name for s in metadata.inputs if s.name == IMAGE),
                         metadata.inputs[0].name)
    for key, value in {
        SERVED_MERGE_PARAMETER: name, "network": name, "network_input": network_input,
        "network_output": LOGITS, "network_max_batch": str(max(1, metadata.max_batch_size)),
        "max_batch_pixels": str(int(max_batch_pixels)), "merge_model": name + MERGE_MODEL_SUFFIX,
    }.items():
        cfg.parameters[key].string_value = value
    return cfg


def _write(repo: Path, cfg: mc.ModelConfig, files: dict[str, Path | None]) -> Path:
    """``<repo>/<cfg.name>/`` with ``config.pbtxt`` and ``1/<file>`` (None: the merge graph
    written there), assembled aside and renamed into place (Triton never sees half of it)."""
    from model_export.onnx.merge import write_merge_graph

    final, tmp = repo / cfg.name, repo / f".{cfg.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / VERSION).mkdir(parents=True)
    write_config(tmp, cfg)
    for filename, src in files.items():
        if src is None:
            write_merge_graph(tmp / VERSION / filename)
        else:
            shutil.copyfile(src, tmp / VERSION / filename)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def write_served_merge(repo: str | Path, metadata: ModelMetadata,
                       options: TritonOptions | None = None) -> list[Path]:
    """Write ``<model>__merge`` (on ``options``' instance kind and count) and
    ``<model>__segment`` beside entry ``metadata.name`` of ``repo``; returns their directories.
    Nothing for an entry without a merge graph, or with ``options.served_merge`` off."""
    options = options or TritonOptions()
    if not (isinstance(metadata, SegmentationMetadata) and metadata.segmentation.merge_graph
            and options.served_merge):
        return []
    kind = (mc.ModelInstanceGroup.KIND_GPU if options.instance_kind == "gpu"
            else mc.ModelInstanceGroup.KIND_CPU)
    repo = Path(repo)
    return [_write(repo, merge_config(metadata.name, kind, int(options.instance_count)),
                   {ONNX_FILENAME: None}),
            _write(repo, segment_config(metadata, instances=max(2, int(options.instance_count))),
                   {"model.py": TEMPLATE})]


__all__ = ["MAX_BATCH_PIXELS", "TEMPLATE", "merge_config", "merge_graph_inputs",
           "segment_config", "write_served_merge"]
