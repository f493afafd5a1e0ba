"""The SRGAN discriminator (Ledig et al., Figure 4), in full precision.

It exists only to train the generator adversarially; it is never quantized and
never deployed. With channels c and S stages (widths c_i = c * 2^i):

    conv0   3x3 s1  3 -> c                    LReLU(0.2)      (no BN)
    stage 0:                conv 3x3 s2  c   -> c    + BN + LReLU
    stage i >= 1: conv 3x3 s1 c_{i-1} -> c_i + BN + LReLU,
                            conv 3x3 s2  c_i -> c_i  + BN + LReLU
    global average pooling -> (N, c_{S-1})
    fc1 dense -> 2 * c_{S-1} + LReLU(0.2)
    fc2 dense -> 1 logit

S = 4, c = 64 is the paper's network (64, 64, 128, 128, 256, 256, 512, 512
channels, dense 1024). One change: the paper flattens a fixed 96x96 input's
6x6x512 map into the dense layer; global average pooling takes any patch size.
Convs followed by BN have no bias (BN's beta replaces it).

Parameters are keyed "disc.conv<k>.{w,b,gamma,beta}" and "disc.fc<j>.{w,b}",
running statistics "disc.conv<k>.bn_mean/bn_var", so they live in the same
checkpoint and the same Adam dict as the generator. The layer list is read back
from the parameter keys and shapes, so no extra config is stored.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..ops import (batchnorm_backward, batchnorm_forward, conv2d_backward, conv2d_forward,
                   dense_backward, dense_forward, leaky_relu_backward, leaky_relu_forward)
from ..ops.adversarial import global_avg_pool_backward, global_avg_pool_forward

PREFIX = "disc."
SLOPE = 0.2
BN_MOMENTUM = 0.1


class DiscConv(NamedTuple):
    name: str    # "disc.conv<k>"
    cin: int
    cout: int
    stride: int
    bn: bool


def disc_convs(channels: int, stages: int) -> list:
    """The conv layers of a discriminator, in execution order."""
    if channels < 1 or stages < 1:
        raise ValueError(f"discriminator: channels {channels} and stages {stages} must be >= 1")
    convs = [DiscConv(PREFIX + "conv0", 3, channels, 1, False)]
    width = channels
    for i in range(stages):
        if i > 0:
            convs.append(DiscConv(f"{PREFIX}conv{len(convs)}", width, 2 * width, 1, True))
            width *= 2
        convs.append(DiscConv(f"{PREFIX}conv{len(convs)}", width, width, 2, True))
    return convs


def disc_init(rng: np.random.Generator, channels: int = 64, stages: int = 4):
    """A fresh discriminator: (params, state), float64 arrays keyed "disc.*".

    PyTorch-like init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases,
    as the generator; BN gamma 1, beta 0, running mean 0, running variance 1.
    """
    params, state = {}, {}

    def uniform(shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, shape)

    for conv in disc_convs(channels, stages):
        fan_in = conv.cin * 9
        params[conv.name + ".w"] = uniform((conv.cout, conv.cin, 3, 3), fan_in)
        if conv.bn:
            params[conv.name + ".gamma"] = np.ones(conv.cout)
            params[conv.name + ".beta"] = np.zeros(conv.cout)
            state[conv.name + ".bn_mean"] = np.zeros(conv.cout)
            state[conv.name + ".bn_var"] = np.ones(conv.cout)
        else:
            params[conv.name + ".b"] = uniform(conv.cout, fan_in)
    last = conv.cout
    for name, f_in, f_out in (("fc1", last, 2 * last), ("fc2", 2 * last, 1)):
        params[f"{PREFIX}{name}.w"] = uniform((f_out, f_in), f_in)
        params[f"{PREFIX}{name}.b"] = uniform(f_out, f_in)
    return params, state


def disc_layers(params: dict) -> list:
    """The conv list of the discriminator whose parameters these are (ValueError if
    the "disc.*" keys do not make one)."""
    w0 = params.get(PREFIX + "conv0.w")
    if w0 is None:
        raise ValueError("discriminator: params have no 'disc.conv0.w' (call disc_init)")
    n_convs = sum(1 for k in params if k.startswith(PREFIX + "conv") and k.endswith(".w"))
    if n_convs % 2:
        raise ValueError(f"discriminator: {n_convs} conv weights in params; a discriminator "
                         f"has an even number (2 per stage)")
    convs = disc_convs(w0.shape[0], n_convs // 2)
    for conv in convs:
        w = params.get(conv.name + ".w")
        if w is None or w.shape != (conv.cout, conv.cin, 3, 3):
            got = None if w is None else w.shape
            raise ValueError(f"discriminator: {conv.name}.w must be "
                             f"{(conv.cout, conv.cin, 3, 3)}, got {got}")
    return convs


class DiscCache(NamedTuple):
    convs: list     # [DiscConv]
    layers: list    # [(conv cache, BN cache or None, LReLU cache)]
    pool: object
    fc1: object
    act1: object
    fc2: object


def disc_forward(params: dict, state: dict, x, training: bool):
    """x: (N, 3, H, W) float32/float64 images in [0, 1] (HR or SR).

    params/state: from disc_init (other keys are ignored); parameters are cast to
    x's dtype. training: BN uses batch statistics and returns updated running
    statistics; otherwise BN uses the running statistics.
    Returns (logits (N,) of x's dtype, cache, new_state) where new_state holds the
    "disc.*.bn_mean/bn_var" entries after this pass (unchanged copies when not
    training). Neither params nor state is modified.
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"discriminator: x must be (N, 3, H, W), got {x.shape}")
    convs = disc_layers(params)
    dt = x.dtype

    def p(key):
        return params[key].astype(dt, copy=False)

    h, layers, new_state = x, [], {}
    for conv in convs:
        h, c_conv = conv2d_forward(h, p(conv.name + ".w"),
                                   None if conv.bn else p(conv.name + ".b"), conv.stride)
        c_bn = None
        if conv.bn:
            h, c_bn, mean, var = batchnorm_forward(
                h, p(conv.name + ".gamma"), p(conv.name + ".beta"),
                state[conv.name + ".bn_mean"].astype(dt, copy=False),
                state[conv.name + ".bn_var"].astype(dt, copy=False),
                training, momentum=BN_MOMENTUM)
            new_state[conv.name + ".bn_mean"] = mean
            new_state[conv.name + ".bn_var"] = var
        h, c_act = leaky_relu_forward(h, SLOPE)
        layers.append((c_conv, c_bn, c_act))
    f, c_pool = global_avg_pool_forward(h)
    f, c_fc1 = dense_forward(f, p(PREFIX + "fc1.w"), p(PREFIX + "fc1.b"))
    f, c_act1 = leaky_relu_forward(f, SLOPE)
    logits, c_fc2 = dense_forward(f, p(PREFIX + "fc2.w"), p(PREFIX + "fc2.b"))
    return logits[:, 0], DiscCache(convs, layers, c_pool, c_fc1, c_act1, c_fc2), new_state


def disc_backward(dlogits, cache: DiscCache):
    """dlogits: (N,) -> (dx (N, 3, H, W), grads): grads has a gradient for every
    "disc.*" parameter, in the forward's dtype. The forward in reverse."""
    grads = {}
    if dlogits.shape != (cache.fc2.x.shape[0],):
        raise ValueError(f"disc_backward: dlogits must be ({cache.fc2.x.shape[0]},), "
                         f"got {dlogits.shape}")
    df, grads[PREFIX + "fc2.w"], grads[PREFIX + "fc2.b"] = dense_backward(dlogits[:, None], cache.fc2)
    df = leaky_relu_backward(df, cache.act1)
    df, grads[PREFIX + "fc1.w"], grads[PREFIX + "fc1.b"] = dense_backward(df, cache.fc1)
    dh = global_avg_pool_backward(df, cache.pool)
    for conv, (c_conv, c_bn, c_act) in zip(reversed(cache.convs), reversed(cache.layers)):
        dh = leaky_relu_backward(dh, c_act)
        if c_bn is not None:
            dh, grads[conv.name + ".gamma"], grads[conv.name + ".beta"] = batchnorm_backward(dh, c_bn)
        dh, grads[conv.name + ".w"], db = conv2d_backward(dh, c_conv)
        if db is not None:
            grads[conv.name + ".b"] = db
    return dh, grads
