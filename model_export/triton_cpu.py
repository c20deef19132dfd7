"""CPU test variants of model repository entries, for a real ``tritonserver`` without GPU backends.

The production repository (``model_export.triton_repo``) uses ``platform: "onnxruntime_onnx"``
(or TensorRT plans), which only NVIDIA's containers provide. The ``tritonserver`` binary that the
tests install from PyPI (``scripts/install_triton.sh``) has just the python backend, so each entry
gets a twin in a *separate* repository directory: same name, inputs, outputs, ``max_batch_size``,
``dynamic_batching``, ``model_warmup`` and ``parameters`` (``hrnet_metadata`` included), but
``backend: "python"`` with a ``model.py`` (``model_export/triton_python_model.py``) that runs the
*same* ``model.onnx`` through ONNX Runtime. Clients cannot tell the two apart except by speed.

Every kind of entry works: one FP32 input and one output (segmentation, landmarks) as well as
detection's two inputs (FP32 ``image``, INT64 ``image_size``), three outputs and
``max_batch_size: 1``. Warm-up samples are kept, and their data files (``warmup/``, e.g.
detection's ``image_size``) copied, so Triton warms the twin up exactly as the original; pass
``warmup=False`` (CLI ``--no-warmup``) to drop them and load faster.

CLI: ``python -m model_export.triton_cpu SRC_REPO_OR_ENTRY DST_REPO --pydeps DIR``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from tritonclient.grpc import model_config_pb2 as mc

from model_export.triton_repo import (
    CONFIG_FILENAME, ONNX_FILENAME, VERSION, WARMUP_DIRNAME, read_config, write_config,
)

TEMPLATE = Path(__file__).with_name("triton_python_model.py")
ONNX_RELPATH = Path(VERSION) / ONNX_FILENAME

# Fields that only make sense for the production backends (or that we set ourselves).
_DROPPED_FIELDS = (
    "platform", "backend", "runtime", "default_model_filename", "cc_model_filenames",
    "optimization", "instance_group",
)


def cpu_config(
    config: mc.ModelConfig, onnx_model: Path, pydeps: Path, *, instances: int = 1, ort_threads: int = 1,
    warmup: bool = True,
) -> mc.ModelConfig:
    """The python-backend twin of ``config`` that runs ``onnx_model`` with ONNX Runtime on the CPU.

    ``ort_threads`` bounds ONNX Runtime's intra-op threads per instance (0: ORT's default), which
    keeps a test server from taking every core of a small CI machine. ``warmup=False`` drops the
    config's ``model_warmup`` samples.
    """
    out = mc.ModelConfig()
    out.CopyFrom(config)
    for field in _DROPPED_FIELDS:
        out.ClearField(field)
    if not warmup:
        out.ClearField("model_warmup")
    out.backend = "python"
    group = out.instance_group.add()
    group.kind = mc.ModelInstanceGroup.KIND_CPU
    group.count = instances
    out.parameters["onnx_model"].string_value = str(onnx_model.resolve())
    out.parameters["pydeps"].string_value = str(pydeps.resolve())
    out.parameters["ort_intra_threads"].string_value = str(ort_threads)
    return out


def write_cpu_variant(
    src_entry: Path, dst_repo: Path, pydeps: Path, *, instances: int = 1, ort_threads: int = 1,
    warmup: bool = True,
) -> Path:
    """Write the CPU twin of repository entry ``src_entry`` into ``dst_repo``; return its directory.

    The twin references ``src_entry/1/model.onnx`` by absolute path (nothing is copied but the
    sidecars and the warm-up data files), so both repositories serve the very same graph.
    """
    src_entry = Path(src_entry)
    config_path = src_entry / CONFIG_FILENAME
    onnx_path = src_entry / ONNX_RELPATH
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found")
    if not onnx_path.is_file():
        raise FileNotFoundError(f"{onnx_path} not found")
    config = read_config(config_path)
    if not config.name:
        config.name = src_entry.name
    twin = cpu_config(config, onnx_path, Path(pydeps), instances=instances, ort_threads=ort_threads,
                      warmup=warmup)

    dst = Path(dst_repo) / twin.name
    version_dir = dst / VERSION
    version_dir.mkdir(parents=True, exist_ok=True)
    write_config(dst, twin)
    shutil.copyfile(TEMPLATE, version_dir / "model.py")
    for sidecar in ("hrnet.json", "parity.json"):
        if (src_entry / sidecar).is_file():
            shutil.copyfile(src_entry / sidecar, dst / sidecar)
    _copy_warmup_files(twin, src_entry, dst)
    return dst


def _copy_warmup_files(config: mc.ModelConfig, src_entry: Path, dst: Path) -> None:
    """Copy the ``input_data_file`` of every warm-up input (Triton reads ``<model>/warmup/<file>``)."""
    for sample in config.model_warmup:
        for name, spec in sample.inputs.items():
            if spec.WhichOneof("input_data_type") != "input_data_file":
                continue
            src = src_entry / WARMUP_DIRNAME / spec.input_data_file
            if not src.is_file():
                raise FileNotFoundError(
                    f"{src} (warm-up data of input '{name}' of {config.name!r}) not found"
                )
            target = dst / WARMUP_DIRNAME / spec.input_data_file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)


def write_cpu_repository(src: Path, dst_repo: Path, pydeps: Path, **kw: Any) -> list[Path]:
    """Write twins of every entry of repository ``src`` (or of the single entry ``src``)."""
    src = Path(src)
    entries = [src] if (src / CONFIG_FILENAME).is_file() else sorted(
        p for p in src.iterdir() if (p / CONFIG_FILENAME).is_file() and (p / ONNX_RELPATH).is_file()
    )
    return [write_cpu_variant(entry, dst_repo, pydeps, **kw) for entry in entries]


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m model_export.triton_cpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("src", type=Path, help="repository (or one entry) to mirror")
    parser.add_argument("dst", type=Path, help="destination repository for the CPU twins")
    parser.add_argument(
        "--pydeps", type=Path, default=Path(".cache/triton/pydeps"),
        help="directory with numpy<2 and onnxruntime for the python backend stub",
    )
    parser.add_argument("--instances", type=int, default=1, help="instances per model")
    parser.add_argument("--ort-threads", type=int, default=1, help="ORT intra-op threads (0: auto)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="drop the entries' warm-up samples (faster loading)")
    args = parser.parse_args(argv)
    written = write_cpu_repository(
        args.src, args.dst, args.pydeps, instances=args.instances, ort_threads=args.ort_threads,
        warmup=not args.no_warmup,
    )
    if not written:
        print(f"no repository entries under {args.src}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
