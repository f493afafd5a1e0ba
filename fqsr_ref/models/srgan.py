"""One SRGAN training step: the (fully quantized) SRResNet generator G and the
full-precision discriminator D, both differentiated in one pass.

    sr = G(lr)
    L_D = BCE(D(hr), 1) + BCE(D(sr), 0)                         -> gradients of D only
    L_G = MSE(sr, hr) + adv_weight * BCE(D(sr), 1) + SQCL       -> gradients of G only
        (SQCL = alpha * sum of L_q over G's quantizers, Eq. 8, 9)

Content loss: SRGAN's VGG feature loss needs pretrained VGG weights, which this
project cannot download, so the pixel MSE (the paper's SRGAN-MSE variant) stands
in for it. The adversarial term reaches G through D (dL/dsr = adv_weight *
D's input gradient); it leaves D's parameters alone, and L_D does not reach G
(sr is a constant for L_D, as `sr.detach()` in PyTorch).

D sees the real and the fake batch in two separate training-mode passes (BN
normalises each batch with its own statistics, as in the usual PyTorch loop).
Both passes update D's BN running statistics, the real pass first, then the
fake pass starting from the real pass's result: two momentum updates per step.
The fake pass's forward serves both L_D and the adversarial term of L_G, since
both are computed with the same D parameters; one optimiser step then updates
G and D together (simultaneous gradient descent, not PyTorch's alternating
D-then-G updates).
"""
from __future__ import annotations

from ..ops import mse_backward, mse_forward
from ..ops.adversarial import bce_logits_backward, bce_logits_forward
from .config import ModelConfig
from .discriminator import PREFIX, disc_backward, disc_forward
from .graph import Pass
from .srnet import sr_backward, sr_forward

REAL, FAKE = 1.0, 0.0


def srgan_step(cfg: ModelConfig, params: dict, state: dict, lr_batch, hr_batch, alpha: float,
               warmup: int, adv_weight: float = 1e-3):
    """Forward and backward of G and D on one batch.

    cfg: the generator's config (arch "srgan"; any SRResNet-family config works).
    params/state: one dict each holding the generator's entries and D's "disc.*"
    entries (disc_init). lr_batch (N, 3, h, w), hr_batch (N, 3, s*h, s*w): float
    images in [0, 1], the dtype of training (params are cast to it as in sr_forward).
    alpha: SQCL weight (Eq. 9); warmup: DAIA length l (Eq. 4).
    Returns (losses, grads, new_state, interval_init):
      losses: floats "pixel" (MSE), "adversarial" (BCE(D(sr), 1)), "sqcl",
        "generator" (= pixel + adv_weight * adversarial + sqcl), "d_real",
        "d_fake", "discriminator" (= d_real + d_fake).
      grads: one dict for G's and D's parameters (keys as params), for one Adam.
      new_state: the state entries this step changed (G's BN/DAIA, D's BN);
        apply with state.update(new_state).
      interval_init: quantizer intervals whose DAIA warm-up ended in this step.
    Neither params nor state is modified.
    """
    if not any(k.startswith(PREFIX) for k in params):
        raise ValueError("srgan_step: params hold no discriminator ('disc.*' keys); "
                         "add disc_init's params and state to the generator's")
    ps = Pass(params, state, cfg, training=True, alpha=alpha, warmup=warmup)
    sr, g_cache = sr_forward(ps, cfg, lr_batch)
    if sr.shape != hr_batch.shape:
        raise ValueError(f"srgan_step: hr_batch {hr_batch.shape} does not match the "
                         f"generator output {sr.shape}")
    pixel, c_pixel = mse_forward(sr, hr_batch)

    logits_real, c_real, state_real = disc_forward(params, state, hr_batch, training=True)
    logits_fake, c_fake, state_fake = disc_forward(params, {**state, **state_real}, sr,
                                                   training=True)
    d_real, c_d_real = bce_logits_forward(logits_real, REAL)
    d_fake, c_d_fake = bce_logits_forward(logits_fake, FAKE)
    adversarial, c_adv = bce_logits_forward(logits_fake, REAL)

    # L_D: D's parameter gradients from both passes; the input gradients are dropped.
    _, grads = disc_backward(bce_logits_backward(c_d_real), c_real)
    _, g_fake = disc_backward(bce_logits_backward(c_d_fake), c_fake)
    for key, g in g_fake.items():
        grads[key] = grads[key] + g

    # L_G: the adversarial term through D to sr; D's parameter gradients are dropped.
    dsr_adv, _ = disc_backward(bce_logits_backward(c_adv, adv_weight), c_fake)
    sr_backward(ps, mse_backward(c_pixel) + dsr_adv, g_cache)
    grads.update(ps.grads)

    losses = {"pixel": float(pixel), "adversarial": float(adversarial), "sqcl": ps.sqcl,
              "generator": float(pixel) + adv_weight * float(adversarial) + ps.sqcl,
              "d_real": float(d_real), "d_fake": float(d_fake),
              "discriminator": float(d_real) + float(d_fake)}
    return losses, grads, {**ps.new_state, **state_fake}, dict(ps.interval_init)
