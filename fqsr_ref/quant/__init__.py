"""quant: the learnable-interval quantizer (Eq. 3), DAIA (Eq. 4), SQCL (Eq. 8, 9), BN fold (Eq. 6).

Dependencies point one way: quant imports ops (the conv of the folded op), never models.
"""
from .bnfold import (FoldCache, FoldedConvCache, fold_backward, fold_bn, fold_forward,
                     folded_conv_backward, folded_conv_forward)
from .daia import (DAIA_MIN_INTERVAL, DAIA_WARMUP, daia_active, daia_init, daia_interval,
                   daia_observe)
from .quantizer import (GRIDS, IDENTITY_BITS, QuantCache, QuantSpec, dequantize, levels,
                        quantize_backward, quantize_forward, round_half_up, scale, ste_grads,
                        validate_spec)
from .sqcl import (SQCL_ALPHA, QuantSqclCache, SqclCache, quantize_with_sqcl_backward,
                   quantize_with_sqcl_forward, sqcl_backward, sqcl_forward)

__all__ = [
    "GRIDS", "IDENTITY_BITS", "QuantSpec", "QuantCache", "validate_spec", "levels", "scale",
    "round_half_up", "quantize_forward", "quantize_backward", "ste_grads", "dequantize",
    "DAIA_WARMUP", "DAIA_MIN_INTERVAL", "daia_init", "daia_observe", "daia_interval",
    "daia_active",
    "SQCL_ALPHA", "SqclCache", "QuantSqclCache", "sqcl_forward", "sqcl_backward",
    "quantize_with_sqcl_forward", "quantize_with_sqcl_backward",
    "FoldCache", "FoldedConvCache", "fold_forward", "fold_backward", "fold_bn",
    "folded_conv_forward", "folded_conv_backward",
]
