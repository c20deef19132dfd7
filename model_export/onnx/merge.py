"""The segmentation merge as an ONNX graph, run where the network runs (``1/merge.onnx``).

It computes exactly the gateway's merge (:mod:`service.tasks.segmentation.merge`, the official
order: flip average of the 1/4-resolution logits before ``exp``, bilinear upsampling to the
pass size, ``exp``, window count-averaging, resize to the source size, the sum over scales,
LIP's final resize, argmax, the optional confidence) for any plan: the plan's geometry arrives as
inputs, 2-tap gather tables that the gateway computes with the same OpenCV/PyTorch coefficients
it uses itself (:func:`service.tasks.segmentation.merge_graph.merge_feed`), so the graph has no
sizes of its own and one file serves every request and every segmentation model.

Inputs (N regions: a window or a whole image of a scale, flip pairs averaged in the graph):

* ``logits`` / ``logits_flipped`` FP32 ``[N, C, h4, w4]``: each region's pass and its mirrored
  pass, zero-padded to the largest region (tables never read the padding);
* ``flip`` BOOL ``[1]``; ``channel_perm`` INT64 ``[C]`` (LIP's left/right swap);
  ``flip_cols`` INT64 ``[N, w4]`` (column ``j`` of the mirrored pass back in place);
* ``up_rows`` / ``up_cols`` INT64 ``[N, 2, ph|pw]`` and ``up_row_w`` / ``up_col_w`` FP32: logits
  to the pass size; ``down_rows`` / ``down_cols`` ``[N, 2, Hs|Ws]`` and weights: pass pixels to
  the source image, the window mask and the reciprocal window count folded into the weights
  (windows form a grid, so the count is a product of a row and a column count);
* ``final_rows`` / ``final_cols`` INT64 ``[2, H|W]`` and weights: LIP's square back to the
  original size (identity otherwise); ``take_exp`` BOOL ``[1]`` (False: one whole pass at the
  original size, whose argmax needs no ``exp``); ``with_confidence`` BOOL ``[1]``;
  ``down_identity`` BOOL ``[N]`` (a whole pass at the source size: its crop, no gathers) and
  ``final_identity`` BOOL ``[1]`` (no final resize): full-resolution work skipped where the
  tables would be the identity.

Outputs: ``labels`` UINT8 ``[H, W]`` and ``confidence`` FP32 (``[H, W]``, or ``[0, 0]`` unless
asked): only these cross back to the caller. Regions are folded in one at a time (a ``Loop``),
so the float work held at once is one region's pass-size scores and the source-size sum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from service.contract import MERGE_INPUTS, MERGE_OUTPUTS

#: Opset of the merge graph (ReduceMax takes ``axes`` as an attribute up to 17).
MERGE_OPSET = 17
F32, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _const(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _two_tap(prefix: str, x: str, index: str, weight: str, axis: int, rank: int, c: str
             ) -> list[onnx.NodeProto]:
    """``out = x.take(index[0], axis) * weight[0] + x.take(index[1], axis) * weight[1]`` for a
    ``[2, n]`` table (already the region's), weights broadcast along ``axis`` of a rank-``rank``
    tensor; writes ``prefix``. ``c``: the prefix of the scope's constants (ONNX forbids a
    subgraph to reuse an outer name)."""
    nodes: list[onnx.NodeProto] = []
    terms = []
    for t in (0, 1):
        nodes += [
            helper.make_node("Gather", [index, f"{c}k{t}"], [f"{prefix}_i{t}"], axis=0),
            helper.make_node("Gather", [weight, f"{c}k{t}"], [f"{prefix}_w{t}"], axis=0),
            helper.make_node("Gather", [x, f"{prefix}_i{t}"], [f"{prefix}_g{t}"], axis=axis),
        ]
        w = f"{prefix}_w{t}"
        if axis != rank - 1:  # weights of rows: [n] -> [n, 1] so they broadcast over columns
            nodes.append(helper.make_node("Unsqueeze", [w, f"{c}ax_last"], [f"{w}_b"]))
            w = f"{w}_b"
        nodes.append(helper.make_node("Mul", [f"{prefix}_g{t}", w], [f"{prefix}_m{t}"]))
        terms.append(f"{prefix}_m{t}")
    nodes.append(helper.make_node("Add", terms, [prefix]))
    return nodes


def _region_body() -> onnx.GraphProto:
    """One Loop iteration: fold region ``it`` into the source-size sum ``acc``."""
    nodes: list[onnx.NodeProto] = [
        _const("b_k0", np.array(0, np.int64)), _const("b_k1", np.array(1, np.int64)),
        _const("b_ax_last", np.array([1], np.int64)), _const("b_half", np.array(0.5, np.float32)),
    ]

    def region(table: str) -> str:
        nodes.append(helper.make_node("Gather", [table, "it"], [f"r_{table}"], axis=0))
        return f"r_{table}"

    a = region("logits")
    b = region("logits_flipped")
    nodes += [
        helper.make_node("Gather", [b, region("flip_cols")], ["b_cols"], axis=2),
        helper.make_node("Gather", ["b_cols", "channel_perm"], ["b_back"], axis=0),
        helper.make_node("Add", [a, "b_back"], ["ab"]),
        helper.make_node("Mul", ["ab", "b_half"], ["avg"]),  # the gateway's (a + b) * 0.5
        helper.make_node("Where", ["flip", "avg", a], ["lg"]),
    ]
    # logits -> pass size: columns first, then rows (the gateway's order).
    nodes += _two_tap("upx", "lg", region("up_cols"), region("up_col_w"), axis=2, rank=3, c="b_")
    nodes += _two_tap("up", "upx", region("up_rows"), region("up_row_w"), axis=1, rank=3, c="b_")
    nodes += [helper.make_node("Exp", ["up"], ["up_exp"]),
              helper.make_node("Where", ["take_exp", "up_exp", "up"], ["scores"])]
    # pass pixels -> source image (window mask and 1/count folded into the weights); a whole
    # pass at the source size is just its top-left crop (no full-resolution gathers).
    down = _two_tap("dny", "scores", region("down_rows"), region("down_row_w"), axis=1, rank=3,
                    c="d_")
    down += _two_tap("dn_g", "dny", region("down_cols"), region("down_col_w"), axis=2, rank=3,
                     c="d_")
    gathers = helper.make_graph(
        [_const("d_k0", np.array(0, np.int64)), _const("d_k1", np.array(1, np.int64)),
         _const("d_ax_last", np.array([1], np.int64)), *down], "down_gathers", [],
        [helper.make_tensor_value_info("dn_g", F32, ["C", "Hs", "Ws"])])
    crop = helper.make_graph(
        [_const("c_s1", np.array([1], np.int64)), _const("c_s3", np.array([3], np.int64)),
         _const("c_zero", np.array([0, 0], np.int64)), _const("c_axes", np.array([1, 2], np.int64)),
         helper.make_node("Shape", ["acc_in"], ["c_shape"]),
         helper.make_node("Slice", ["c_shape", "c_s1", "c_s3"], ["c_hw"]),
         helper.make_node("Slice", ["scores", "c_zero", "c_hw", "c_axes"], ["dn_c"])],
        "down_crop", [], [helper.make_tensor_value_info("dn_c", F32, ["C", "Hs", "Ws"])])
    nodes += [helper.make_node("If", [region("down_identity")], ["dn"], then_branch=crop,
                               else_branch=gathers),
              helper.make_node("Add", ["acc_in", "dn"], ["acc_out"]),
              helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    return helper.make_graph(
        nodes, "region",
        [helper.make_tensor_value_info("it", I64, []),
         helper.make_tensor_value_info("cond_in", BOOL, []),
         helper.make_tensor_value_info("acc_in", F32, ["C", "Hs", "Ws"])],
        [helper.make_tensor_value_info("cond_out", BOOL, []),
         helper.make_tensor_value_info("acc_out", F32, ["C", "Hs", "Ws"])])


def _confidence_branch() -> onnx.GraphProto:
    """max score / sum of scores (exp-scores), or the softmax maximum (logits: ``take_exp``
    False), per pixel of the final ``[C, H, W]`` map."""
    nodes = [
        _const("ax0", np.array([0], np.int64)),
        helper.make_node("ReduceMax", ["final"], ["mx"], axes=[0], keepdims=1),
        helper.make_node("ReduceSum", ["final", "ax0"], ["sm"], keepdims=1),
        helper.make_node("Div", ["mx", "sm"], ["ratio"]),
        helper.make_node("Sub", ["final", "mx"], ["shifted"]),
        helper.make_node("Exp", ["shifted"], ["e"]),
        helper.make_node("ReduceSum", ["e", "ax0"], ["esum"], keepdims=1),
        helper.make_node("Reciprocal", ["esum"], ["soft"]),
        helper.make_node("Where", ["take_exp", "ratio", "soft"], ["conf3"]),
        helper.make_node("Squeeze", ["conf3", "ax0"], ["conf"]),
    ]
    return helper.make_graph(nodes, "confidence", [],
                             [helper.make_tensor_value_info("conf", F32, ["H", "W"])])


def _no_confidence_branch() -> onnx.GraphProto:
    nodes = [_const("none", np.zeros([0, 0], np.float32))]
    return helper.make_graph(nodes, "no_confidence", [],
                             [helper.make_tensor_value_info("none", F32, [0, 0])])


def build_merge_graph() -> onnx.ModelProto:
    """The merge graph (see the module docstring)."""
    ins = {
        "logits": (F32, ["N", "C", "h4", "w4"]), "logits_flipped": (F32, ["N", "C", "fh4", "w4"]),
        "flip": (BOOL, [1]), "channel_perm": (I64, ["C"]), "flip_cols": (I64, ["N", "w4"]),
        "up_rows": (I64, ["N", 2, "ph"]), "up_row_w": (F32, ["N", 2, "ph"]),
        "up_cols": (I64, ["N", 2, "pw"]), "up_col_w": (F32, ["N", 2, "pw"]),
        "down_rows": (I64, ["N", 2, "Hs"]), "down_row_w": (F32, ["N", 2, "Hs"]),
        "down_cols": (I64, ["N", 2, "Ws"]), "down_col_w": (F32, ["N", 2, "Ws"]),
        "final_rows": (I64, [2, "H"]), "final_row_w": (F32, [2, "H"]),
        "final_cols": (I64, [2, "W"]), "final_col_w": (F32, [2, "W"]),
        "take_exp": (BOOL, [1]), "with_confidence": (BOOL, [1]),
        "down_identity": (BOOL, ["N"]), "final_identity": (BOOL, [1]),
    }
    assert tuple(ins) == MERGE_INPUTS
    nodes = [
        _const("m_k0", np.array(0, np.int64)), _const("m_k1", np.array(1, np.int64)),
        _const("m_ax_last", np.array([1], np.int64)), _const("true", np.array(True)),
        _const("s0", np.array([0], np.int64)), _const("s1", np.array([1], np.int64)),
        _const("s2", np.array([2], np.int64)), _const("s3", np.array([3], np.int64)),
        # acc = zeros [C, Hs, Ws]; trip count N
        helper.make_node("Shape", ["logits"], ["lshape"]),
        helper.make_node("Shape", ["down_rows"], ["rshape"]),
        helper.make_node("Shape", ["down_cols"], ["cshape"]),
        helper.make_node("Slice", ["lshape", "s0", "s1"], ["n1"]),
        helper.make_node("Slice", ["lshape", "s1", "s2"], ["c1"]),
        helper.make_node("Slice", ["rshape", "s2", "s3"], ["hs1"]),
        helper.make_node("Slice", ["cshape", "s2", "s3"], ["ws1"]),
        helper.make_node("Concat", ["c1", "hs1", "ws1"], ["acc_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["acc_shape"], ["acc0"],
                         value=numpy_helper.from_array(np.zeros([1], np.float32))),
        helper.make_node("Squeeze", ["n1", "s0"], ["trips"]),
        helper.make_node("Loop", ["trips", "true", "acc0"], ["acc"], body=_region_body()),
    ]
    # LIP: the summed scores to the original size (rows first); the sum itself otherwise.
    final = _two_tap("fy", "acc", "final_rows", "final_row_w", axis=1, rank=3, c="f_")
    final += _two_tap("final_g", "fy", "final_cols", "final_col_w", axis=2, rank=3, c="f_")
    resize = helper.make_graph(
        [_const("f_k0", np.array(0, np.int64)), _const("f_k1", np.array(1, np.int64)),
         _const("f_ax_last", np.array([1], np.int64)), *final], "final_resize", [],
        [helper.make_tensor_value_info("final_g", F32, ["C", "H", "W"])])
    same = helper.make_graph([helper.make_node("Identity", ["acc"], ["final_i"])], "final_same",
                             [], [helper.make_tensor_value_info("final_i", F32, ["C", "H", "W"])])
    nodes += [
        helper.make_node("If", ["final_identity"], ["final"], then_branch=same,
                         else_branch=resize),
        helper.make_node("ArgMax", ["final"], ["arg"], axis=0, keepdims=0),  # first max wins
        helper.make_node("Cast", ["arg"], ["labels"], to=TensorProto.UINT8),
        helper.make_node("If", ["with_confidence"], ["confidence"],
                         then_branch=_confidence_branch(), else_branch=_no_confidence_branch()),
    ]
    graph = helper.make_graph(
        nodes, "hrnet_segmentation_merge",
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in ins.items()],
        [helper.make_tensor_value_info(MERGE_OUTPUTS[0], TensorProto.UINT8, ["H", "W"]),
         helper.make_tensor_value_info(MERGE_OUTPUTS[1], F32, ["cH", "cW"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", MERGE_OPSET)],
                              producer_name="hrnet-serve model_export")
    onnx.checker.check_model(model)
    return model


def write_merge_graph(path: str | Path) -> Path:
    """Write the merge graph to ``path`` (the entry's ``1/merge.onnx``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(build_merge_graph(), str(path))
    return path


__all__ = ["MERGE_OPSET", "build_merge_graph", "write_merge_graph"]
