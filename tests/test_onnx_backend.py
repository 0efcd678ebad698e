"""onnx's official backend node tests for the supported ops, run through lpuc.backend (compile for
lpu-v1 in fp32, run the emulator, compare with onnx's expected outputs).

Every test of the supported ops runs except the ones listed in EXCLUDED, each group with the reason.
"""

from __future__ import annotations

import re
import warnings

import onnx.backend.test
import pytest

from lpuc.backend import LpucBackend

warnings.filterwarnings("ignore", category=RuntimeWarning)  # onnx's case generators divide by zero on purpose

SUPPORTED = (
    "abs", "add", "and", "cast", "castlike", "ceil", "clip", "concat", "constant", "constantofshape", "conv",
    "cumsum", "div", "einsum", "equal", "erf", "exp", "expand", "flatten", "floor", "gather", "gather_elements",
    "gathernd", "gelu", "gemm", "greater", "greater_equal", "identity", "isnan", "layer_normalization", "less",
    "less_equal", "log", "matmul", "max", "mean", "min", "mod", "mul", "neg", "not", "or", "pow", "range",
    "pad", "constant_pad", "edge_pad", "reflect_pad", "wrap_pad", "reciprocal", "reduce_max", "reduce_mean", "reduce_min", "reduce_sum", "reduce_sum_square", "relu",
    "reshape", "rms_normalization", "sigmoid", "sign", "slice", "softmax", "split", "sqrt", "squeeze", "sub",
    "sum", "tanh", "transpose", "tril", "triu", "unsqueeze", "where", "xor",
    "quantizelinear", "dequantizelinear", "dynamicquantizelinear", "matmulinteger", "qlinearmatmul",
)

EXCLUDED = {
    "types the chip does not have (int16, uint16/32/64, float64, float8 FNUZ, float4, int/uint 2 and 4 bit, "
    "e8m0, strings); the chip computes in u8, i8, i32, f16, bf16 and f32 and converts f8e4m3fn/f8e5m2": [
        "add_int16", "add_uint16", "add_uint32", "add_uint64", "cast_DOUBLE_to_FLOAT",
        "cast_DOUBLE_to_FLOAT16", "cast_FLOAT16_to_DOUBLE", "cast_FLOAT16_to_FLOAT4E2M1",
        "cast_FLOAT16_to_FLOAT8E4M3FNUZ", 
        "cast_FLOAT16_to_FLOAT8E5M2FNUZ", "cast_FLOAT16_to_INT2", "cast_FLOAT16_to_INT4",
        "cast_FLOAT16_to_UINT2", "cast_FLOAT16_to_UINT4", "cast_FLOAT4E2M1_to_FLOAT",
        "cast_FLOAT4E2M1_to_FLOAT16", "cast_FLOAT8E4M3FNUZ_to_FLOAT", "cast_FLOAT8E4M3FNUZ_to_FLOAT16",
        "cast_FLOAT8E5M2FNUZ_to_FLOAT",
        "cast_FLOAT8E5M2FNUZ_to_FLOAT16", 
        "cast_FLOAT_to_DOUBLE", "cast_FLOAT_to_FLOAT4E2M1", 
        "cast_FLOAT_to_FLOAT8E4M3FNUZ", "cast_FLOAT_to_FLOAT8E5M2FNUZ",
        "cast_FLOAT_to_INT2", "cast_FLOAT_to_INT4", "cast_FLOAT_to_UINT2", "cast_FLOAT_to_UINT4",
        "cast_INT2_to_FLOAT", "cast_INT2_to_FLOAT16", "cast_INT2_to_INT8", "cast_INT4_to_FLOAT",
        "cast_INT4_to_FLOAT16", "cast_INT4_to_INT8", "cast_UINT2_to_FLOAT", "cast_UINT2_to_FLOAT16",
        "cast_UINT2_to_UINT8", "cast_UINT4_to_FLOAT", "cast_UINT4_to_FLOAT16", "cast_UINT4_to_UINT8",
        "cast_e8m0_FLOAT16_to_FLOAT8E8M0", "cast_e8m0_FLOAT8E8M0_to_FLOAT", "cast_e8m0_FLOAT8E8M0_to_FLOAT16",
        "cast_e8m0_FLOAT_to_FLOAT8E8M0", 
        "cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ", 
        "cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ", 
        "cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ", 
        "cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ", "div_int16", "div_uint16", "div_uint32", "div_uint64",
        "equal_int16", "equal_string", "equal_string_broadcast", "equal_uint16", "equal_uint32",
        "equal_uint64", "greater_equal_int16", "greater_equal_int16_expanded", "greater_equal_uint16",
        "greater_equal_uint16_expanded", "greater_equal_uint32", "greater_equal_uint32_expanded",
        "greater_equal_uint64", "greater_equal_uint64_expanded", "greater_int16", "greater_uint16",
        "greater_uint32", "greater_uint64", "less_equal_int16", "less_equal_int16_expanded",
        "less_equal_uint16", "less_equal_uint16_expanded", "less_equal_uint32", "less_equal_uint32_expanded",
        "less_equal_uint64", "less_equal_uint64_expanded", "less_int16", "less_uint16", "less_uint32",
        "less_uint64", "max_float64", "max_int16", "max_uint16", "max_uint32", "max_uint64", "min_float64",
        "min_int16", "min_uint16", "min_uint32", "min_uint64", "mul_int16", "mul_uint16", "mul_uint32",
        "mul_uint64", "pow_types_float32_uint32", "pow_types_float32_uint64", "sub_int16", "sub_uint16",
        "sub_uint32", "sub_uint64",
    ],
    "CumSum, Einsum and Mod tests in float64, int16 and uint16/32/64, types the chip does not have": [
        "cumsum_1d", "cumsum_1d_exclusive", "cumsum_1d_reverse", "cumsum_1d_reverse_exclusive", "cumsum_2d_axis_0",
        "cumsum_2d_axis_1", "cumsum_2d_negative_axis", "einsum_batch_matmul", "einsum_inner_prod", "einsum_scalar",
        "einsum_sum", "einsum_transpose", "mod_float64_mixed_sign_fmod_0", "mod_float_edge_cases_fmod_0_float64",
        "mod_mixed_sign_float64", "mod_mixed_sign_int16", "mod_uint16", "mod_uint32", "mod_uint64",
    ],
    "Mod on floats: a - trunc(a/b)*b rounds twice on the VXM, so it is not exact; the chip lowers integer Mod": [
        "mod_float16_mixed_sign_fmod_0", "mod_float32_mixed_sign_fmod_0", "mod_float_edge_cases_fmod_0_float16",
        "mod_float_edge_cases_fmod_0_float32", "mod_mixed_sign_float16", "mod_mixed_sign_float32",
    ],
    "Einsum with a label repeated in one operand (a diagonal): not lowered": ["einsum_batch_diagonal"],
    "ops outside the supported transformer set, used inside expanded functions or on sequences (Ceil, "
    "SplitToSequence, Identity of a sequence/optional, LogSoftmax)": [
        "identity_opt", "identity_sequence",
        "range_bfloat16_type_positive_delta_expanded", "range_float16_type_positive_delta_expanded",
        "range_float_type_positive_delta_expanded", "range_int32_type_negative_delta_expanded",
        "split_to_sequence_1", "split_to_sequence_2", "split_to_sequence_nokeepdims",
        "log_softmax_dim3", "log_softmax_lastdim",
    ],
    "GatherND with indices computed at run time (constant indices are a data movement; run-time "
    "Gather and GatherElements pick rows on the MEM GATHER)": [
        "gathernd_example_float32", "gathernd_example_int32", "gathernd_example_int32_batch_dim1",
    ],
    "quantization schemes lpuc refuses by name (blocked, 2-, 4- and 16-bit, float4): the MXM takes 8-bit "
    "integers and fp8": [
        "dequantizelinear_blocked", "dequantizelinear_float4e2m1", "dequantizelinear_int16", "dequantizelinear_int2",
        "dequantizelinear_int4", "dequantizelinear_uint16", "dequantizelinear_uint2", "dequantizelinear_uint4",
        "quantizelinear_blocked_asymmetric", "quantizelinear_blocked_symmetric", "quantizelinear_float4e2m1",
        "quantizelinear_int16", "quantizelinear_int2", "quantizelinear_int4", "quantizelinear_uint16",
        "quantizelinear_uint2", "quantizelinear_uint4",
    ],
    "integer products whose weights, scales and zero points are run-time inputs: lpuc folds colsum(B) and "
    "the requantization multiplier at compile time, so MatMulInteger and QLinearMatMul need them constant": [
        "matmulinteger", "qlinearmatmul_2D_int8_float16", "qlinearmatmul_2D_int8_float32",
        "qlinearmatmul_2D_uint8_float16", "qlinearmatmul_2D_uint8_float32", "qlinearmatmul_3D_int8_float16",
        "qlinearmatmul_3D_int8_float32", "qlinearmatmul_3D_uint8_float16", "qlinearmatmul_3D_uint8_float32",
    ],
    "DynamicQuantizeLinear's function body (the expanded tests) rounds with Round, which lpuc does not lower "
    "(the op itself runs: the unexpanded tests)": [
        "dynamicquantizelinear_expanded", "dynamicquantizelinear_max_adjusted_expanded",
        "dynamicquantizelinear_min_adjusted_expanded",
    ],
}

#: the same type reasons, for the CastLike twins of the Cast tests (and their expanded forms)
EXCLUDED_PATTERNS = {
    "CastLike to or from types the chip does not have": r"castlike_(no_saturate_)?\w*(DOUBLE|FLOAT8E4M3FNUZ|FLOAT8E5M2FNUZ|FLOAT4|INT4|UINT4|INT2|UINT2|E8M0)\w*",
}

backend_test = onnx.backend.test.BackendTest(LpucBackend, __name__)
backend_test.include(rf"^test_({'|'.join(SUPPORTED)})(_.*)?_cpu$")
for names in EXCLUDED.values():
    for name in names:
        backend_test.exclude(rf"^test_{re.escape(name)}_cpu$")
for pattern in EXCLUDED_PATTERNS.values():
    backend_test.exclude(rf"^test_{pattern}_cpu$")

globals().update(backend_test.test_cases)


def test_exclusions_are_all_real_test_names():
    from onnx.backend.test.loader import load_model_tests

    known = {c.name[5:] for c in load_model_tests(kind="node")} | {c.name[5:] for c in load_model_tests(kind="pytorch-converted")}
    unknown = [n for names in EXCLUDED.values() for n in names if n not in known]
    assert not unknown, unknown


@pytest.mark.parametrize("name", ["gemm_default_single_elem_vector_bias", "layer_normalization_2d_axis0"])
def test_some_supported_cases_are_selected(name):
    assert any(name in k for case in backend_test.test_cases.values() for k in dir(case))
