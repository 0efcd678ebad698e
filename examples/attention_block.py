"""Write one self-attention block as ONNX (the tutorial's model, docs/tutorial.md).

    y = concat_h( softmax(Q_h K_h^T / sqrt(16)) V_h ) Wo,   Q = x Wq, K = x Wk, V = x Wv

x is [8, 32] (8 tokens, width 32), 2 heads of 16, heads split and merged with Reshape and Transpose as
exporters write them. Weights are N(0, 0.2) from a fixed seed, so two runs write identical bytes.

    python examples/attention_block.py attention.onnx
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

T, D, H = 8, 32, 2  # tokens, width, heads
HD = D // H


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(18)
    inits = [numpy_helper.from_array((0.2 * rng.standard_normal((D, D))).astype(np.float32), name)
             for name in ("wq", "wk", "wv", "wo")]
    inits += [numpy_helper.from_array(np.array([T, H, HD], np.int64), "heads_shape"),
              numpy_helper.from_array(np.array([T, D], np.int64), "merged_shape"),
              numpy_helper.from_array(np.array(1 / np.sqrt(HD), np.float32), "scale")]
    n = helper.make_node
    nodes = [n("MatMul", ["x", "wq"], ["q"], name="q_proj"),
             n("MatMul", ["x", "wk"], ["k"], name="k_proj"),
             n("MatMul", ["x", "wv"], ["v"], name="v_proj")]
    for t in ("q", "k", "v"):  # [T, D] -> [T, H, HD] -> [H, T, HD]
        nodes += [n("Reshape", [t, "heads_shape"], [f"{t}3"], name=f"{t}_split"),
                  n("Transpose", [f"{t}3"], [f"{t}h"], perm=[1, 0, 2], name=f"{t}_heads")]
    nodes += [n("Transpose", ["kh"], ["kt"], perm=[0, 2, 1], name="k_t"),
              n("MatMul", ["qh", "kt"], ["s"], name="scores"),
              n("Mul", ["s", "scale"], ["ss"], name="scale_scores"),
              n("Softmax", ["ss"], ["p"], axis=-1, name="softmax"),
              n("MatMul", ["p", "vh"], ["o"], name="pv"),
              n("Transpose", ["o"], ["o2"], perm=[1, 0, 2], name="o_merge"),
              n("Reshape", ["o2", "merged_shape"], ["o3"], name="o_flat"),
              n("MatMul", ["o3", "wo"], ["y"], name="o_proj")]
    g = helper.make_graph(nodes, "attention_block",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [T, D])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], producer_name="lpuc-tutorial")
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/attention_block.py OUT.onnx", file=sys.stderr)
        return 2
    onnx.save(build(), argv[0])
    print(f"wrote {argv[0]}: x [{T}, {D}] -> y [{T}, {D}], {H} heads of {HD}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
