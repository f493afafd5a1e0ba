"""fqsr_ref: bit-exact reference of Fully Quantized Image Super-Resolution networks.

The data flows one way, and so do the imports:
    ops (float layers) <- quant (Eq. 3, 4, 6, 8, 9) <- models <- train
    checkpoint -> integer (integer-only model, engines) -> vectors -> ports
"""
__version__ = "0.1.0"
