"""The segmentation merge where the network runs (the merge graph) against the gateway's merge:
bytes moved and time, side by side in one run, on this machine's CPU.

    .venv/bin/python benchmarks/bench_device_merge.py [--size 1024x2048] [--repeat 3]
        [--classes 19] [--threads 0] [--cases single,official]

Per case (Cityscapes protocol, base 2048, crop 1024x2048; ``single``: scale 1.0, ``official``:
scales 0.5..1.75 + flip, 15 regions of 30 passes at 2048x1024), on random logits at the passes'
1/4 resolution:

* bytes: what crosses from where the network runs to the gateway today (the passes' float32
  logits), and with the merge there (the uint8 label map; the confidence map adds 4 bytes per
  pixel only when asked), plus the gather tables the gateway would send (they do not depend on
  the logits);
* time: the gateway's merge (:func:`service.tasks.segmentation.merge.merge_segmentation`, its
  row blocks on the gateway's CPU pool) and the merge graph on ONNX Runtime CPU (building its
  feed included, ``--threads`` intra-op threads, 0 = one per CPU), medians of ``--repeat`` runs
  each, alternating, and graph / gateway;
* agreement: the fraction of pixels with the same label (float sums in another order).

What this does not measure: the merge graph on a GPU (benchmarks/gpu_check.sh does), where
its full-resolution float work is meant to run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service.contract import ExportInfo, WeightsInfo  # noqa: E402
from service.tasks.segmentation.merge import merge_segmentation  # noqa: E402
from service.tasks.segmentation.merge_graph import merge_feed  # noqa: E402
from service.tasks.segmentation.plan import plan_segmentation  # noqa: E402

OFFICIAL = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def cityscapes_meta(classes: int):
    """Cityscapes' official protocol (``classes`` labels only when not 19)."""
    from model_export.metadata import build_metadata

    meta = build_metadata(
        name="bench", task="segmentation", arch="hrnetv2_w48", dataset="cityscapes",
        weights=WeightsInfo(random_init=True, origin="random-init", format="random-init"),
        export=ExportInfo(model_export_version="0", torch="-", onnx="-", opset=18,
                          exported_at="-"), max_batch_size=8)
    if classes != len(meta.labels):
        meta = meta.model_copy(update={"labels": [f"c{i}" for i in range(classes)]})
    return meta


def session(threads: int):
    """The merge graph on ONNX Runtime CPU."""
    import onnxruntime as ort

    from model_export.onnx.merge import build_merge_graph

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or (os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(build_merge_graph().SerializeToString(), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def run_case(name: str, size: tuple[int, int], scales: list[float], flip: bool, classes: int,
             repeat: int, sess) -> dict[str, float]:
    meta = cityscapes_meta(classes)
    plan = plan_segmentation(size, meta, scales=scales, flip=flip)
    rng = np.random.default_rng(0)
    logits = [rng.normal(0, 3, (classes, -(-sp.pass_size[0] // 4), -(-sp.pass_size[1] // 4)))
              .astype(np.float32)
              for sp in plan.scales for _ in range(sp.n_regions * plan.passes_per_region)]
    gateway_s, graph_s, feed_s = [], [], []
    labels = ref = None
    for _ in range(repeat):  # alternating, so both see the same machine load
        t0 = time.perf_counter()
        ref = merge_segmentation(plan, logits).labels
        gateway_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        feed = merge_feed(plan, logits)
        t1 = time.perf_counter()
        labels, _ = sess.run(None, feed)
        graph_s.append(time.perf_counter() - t0)
        feed_s.append(t1 - t0)
    assert feed is not None and labels is not None and ref is not None
    tables = sum(v.nbytes for k, v in feed.items() if not k.startswith("logits"))
    return {
        "passes": plan.n_passes,
        "logit_bytes": sum(lg.nbytes for lg in logits),
        "label_bytes": labels.nbytes,
        "confidence_bytes": 4 * labels.size,
        "table_bytes": tables,
        "gateway_ms": statistics.median(gateway_s) * 1e3,
        "graph_ms": statistics.median(graph_s) * 1e3,
        "feed_ms": statistics.median(feed_s) * 1e3,
        "agreement": float((labels == ref).mean()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=_size, default=(1024, 2048), help="image HxW")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--classes", type=int, default=19)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--cases", default="single,official")
    args = ap.parse_args()
    sess = session(args.threads)
    cases = {"single": ([1.0], False), "official": (OFFICIAL, True)}
    h, w = args.size
    print(f"merge of a {w}x{h} image, {args.classes} classes, medians of {args.repeat}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'case':<9} {'passes':>6} {'logits MB':>10} {'labels MB':>10} {'bytes ratio':>12} "
          f"{'tables MB':>10} {'gateway ms':>11} {'graph ms':>9} {'(feed ms)':>10} "
          f"{'graph/gateway':>14} {'agree':>8}")
    for name in args.cases.split(","):
        scales, flip = cases[name]
        r = run_case(name, args.size, scales, flip, args.classes, args.repeat, sess)
        print(f"{name:<9} {r['passes']:>6} {r['logit_bytes'] / 1e6:>10.1f} "
              f"{r['label_bytes'] / 1e6:>10.2f} {r['label_bytes'] / r['logit_bytes']:>12.4f} "
              f"{r['table_bytes'] / 1e6:>10.2f} {r['gateway_ms']:>11.0f} {r['graph_ms']:>9.0f} "
              f"{r['feed_ms']:>10.0f} {r['graph_ms'] / r['gateway_ms']:>14.2f} "
              f"{r['agreement']:>8.5f}", flush=True)
    print("bytes ratio: label map / float logits (what crosses from where the network runs); "
          "with confidence add 4 bytes per pixel. graph/gateway > 1: the graph is slower here.")


if __name__ == "__main__":
    main()
