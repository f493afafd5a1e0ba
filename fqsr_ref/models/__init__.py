"""FQSR models: SRResNet, FQSR_Lite, the SRGAN generator and EDSR-baseline.

A model is data: a ModelConfig, a dict of parameters and a dict of state.
`sr_forward(Pass, cfg, x)` / `sr_backward(Pass, dy, cache)` run it.
"""
import numpy as np

from ..data.images import float_to_uint8

from .config import ARCHS, ModelConfig, parse_bits, preset
from .graph import Pass, cast_floats
from .srnet import (change_pixel_range, init_model, layer_specs, quantize_model, quantized_start,
                    sr_backward, sr_forward)


def upscale(cfg: ModelConfig, params: dict, state: dict, lr_uint8):
    """Super-resolve one image: (H, W, 3) uint8 -> (sH, sW, 3) uint8.

    Runs the (fake-quantized) float model in inference mode in float32; the output
    is rounded half up and clamped to 8 bits.
    """
    x = (np.asarray(lr_uint8, np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
    y, _ = sr_forward(Pass(cast_floats(params, np.float32), state, cfg, keep_cache=False), cfg,
                      np.ascontiguousarray(x))
    return float_to_uint8(y[0].transpose(1, 2, 0).astype(np.float64) * 255)


__all__ = ["ARCHS", "ModelConfig", "Pass", "change_pixel_range", "init_model", "layer_specs",
           "parse_bits", "preset", "quantize_model", "quantized_start", "sr_backward", "sr_forward", "upscale"]
