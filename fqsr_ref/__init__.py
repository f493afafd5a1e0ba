"""fqsr_ref: bit-exact reference of Fully Quantized Image Super-Resolution networks.

The data flows one way, and so do the imports:
    ops (float layers) <- quant (Eq. 3, 4, 6, 8, 9) <- models <- train
    checkpoint -> integer (integer-only model, engines) -> vectors -> ports
"""
import os

from .blas import blas_threads, set_blas_threads

# One BLAS thread unless the user says otherwise. The trainer's GEMMs are small
# (16 channels x 10^4 pixels); OpenBLAS's spinning worker threads made them 10-150x
# slower on a 2-core machine with any other load (0.08 ms vs 13.7 ms for a
# 16x16 @ 16x10816 float32 GEMM, measured), and cost a large GEMM half its speed
# at most when idle. The variable alone is read only by an OpenBLAS loaded after
# this import; set_blas_threads also sets the ones already loaded (numpy imported
# first: tools/reproduce.py ran at 5.4 steps/s instead of 42).
if "OPENBLAS_NUM_THREADS" not in os.environ:
    set_blas_threads(1)

__version__ = "0.1.0"
