"""Float layers with hand-written forward and backward passes.

Every op is a pair name_forward(...) -> (y, cache) and name_backward(dy, cache)
-> gradients (losses: name_backward(cache, dloss)). Layouts: NCHW feature maps,
OIHW conv weights, (F_out, F_in) dense weights. See docs/SPEC.md, section "ops".
"""
from .activations import (leaky_relu_backward, leaky_relu_forward, prelu_backward,
                          prelu_forward, relu_backward, relu_forward)
from .batchnorm import batchnorm_backward, batchnorm_forward
from .conv import conv2d_backward, conv2d_forward, conv2d_reference
from .dense import dense_backward, dense_forward
from .losses import (add_backward, add_forward, l1_backward, l1_forward, mse_backward,
                     mse_forward)
from .shuffle import pixel_shuffle_backward, pixel_shuffle_forward, pixel_unshuffle

__all__ = [
    "relu_forward", "relu_backward", "prelu_forward", "prelu_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "batchnorm_forward", "batchnorm_backward",
    "conv2d_forward", "conv2d_backward", "conv2d_reference",
    "dense_forward", "dense_backward",
    "l1_forward", "l1_backward", "mse_forward", "mse_backward",
    "add_forward", "add_backward",
    "pixel_shuffle_forward", "pixel_shuffle_backward", "pixel_unshuffle",
]
