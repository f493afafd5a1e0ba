"""Integer-only inference: arithmetic rules and the two exact engines.

requant      code ranges, accumulator bounds, multipliers, requantization
engine_plain exact GEMM / "same" conv on codes (float32/float64 BLAS where provably exact)
bitplane     the same products as weighted popcounts of bit planes (Eq. 2, Numba)
"""
from .bitplane import (bitplane_conv2d, bitplane_gemm, bitplane_gemm_reference, bitplane_matmul,
                       bitplane_partials, pack_planes, plane_weights)
from .engine_plain import int_conv2d, int_gemm
from .requant import (acc_bound, acc_dtype, code_dtype, code_range, multiply_by_quantized_multiplier,
                      operand_max_abs, quantize_multiplier, requantize, requantize_reference,
                      rounding_right_shift, saturate)

__all__ = [
    "acc_bound", "acc_dtype", "bitplane_conv2d", "bitplane_gemm", "bitplane_gemm_reference",
    "bitplane_matmul", "bitplane_partials", "code_dtype", "code_range", "int_conv2d", "int_gemm",
    "multiply_by_quantized_multiplier", "operand_max_abs", "pack_planes", "plane_weights",
    "quantize_multiplier", "requantize", "requantize_reference", "rounding_right_shift", "saturate",
]
