"""``python -m model_export.triton_cpu SRC_REPO_OR_ENTRY DST_REPO --pydeps DIR``: write CPU twins
of a repository's entries (or of one entry) into another repository; see
:mod:`model_export.triton_cpu`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_export.triton_cpu import write_cpu_repository


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m model_export.triton_cpu",
        description="CPU test variants of model repository entries, for a real ``tritonserver`` "
        "without GPU backends.",
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
