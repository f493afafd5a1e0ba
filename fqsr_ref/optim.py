"""Adam over a dict of parameters, and the per-iteration cosine learning-rate schedule.

Adam (Kingma & Ba; PyTorch's torch.optim.Adam without weight decay), per key with
its own step count t (1 on its first update):
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g^2
    p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

The state is a flat dict of plain arrays, so np.savez(path, **state) saves it and
dict(np.load(path, allow_pickle=False)) restores it:
    "step"      int, number of adam_step calls
    "t/<key>"   0-d int64 array, updates applied to parameter <key>
    "m/<key>"   first moment, shape and dtype of the parameter
    "v/<key>"   second moment, shape and dtype of the parameter
A key with no gradient (absent from grads, or None) is skipped: its parameter,
moments and t stay as they are, so a parameter that starts training late (a
DAIA interval, for example) gets the bias correction of its own first step.
"""
import math

import numpy as np

from .ops._checks import check_float, describe


def adam_init(params):
    """params: dict name -> float array. Returns the zero state (see module docstring)."""
    state = {"step": 0}
    for key, p in params.items():
        check_float(f"adam_init: parameter {key!r}", p=p)
        state[f"t/{key}"] = np.array(0, dtype=np.int64)
        state[f"m/{key}"] = np.zeros_like(p)
        state[f"v/{key}"] = np.zeros_like(p)
    return state


def adam_step(params, grads, state, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    """One Adam update.

    params: dict name -> array; grads: dict name -> array of the same shape and
    dtype (or None / absent to skip); state: from adam_init or a previous step.
    Returns (new_params, new_state), new dicts; the inputs are not modified and
    skipped entries are shared with them.
    """
    extra = set(grads) - set(params)
    if extra:
        raise ValueError(f"adam_step: gradients for unknown parameters {sorted(extra)}")
    new_params, new_state = dict(params), dict(state)
    new_state["step"] = int(state["step"]) + 1
    for key, p in params.items():
        g = grads.get(key)
        if g is None:
            continue
        op = f"adam_step: parameter {key!r}"
        if f"m/{key}" not in state:
            raise ValueError(f"{op} has no optimizer state (state keys come from adam_init)")
        check_float(op, param=p, grad=g)
        if g.shape != p.shape:
            raise ValueError(f"{op}: grad {describe(g)} does not match param {describe(p)}")
        t = int(state[f"t/{key}"]) + 1
        m = beta1 * state[f"m/{key}"] + (1 - beta1) * g
        v = beta2 * state[f"v/{key}"] + (1 - beta2) * (g * g)
        # bias corrections in float64 Python scalars; NumPy keeps the array dtype
        step_size = lr / (1 - beta1 ** t)
        root_bc2 = math.sqrt(1 - beta2 ** t)
        # np.asarray: arithmetic on a 0-d array (a quantizer interval) gives a scalar.
        new_params[key] = np.asarray(p - step_size * m / (np.sqrt(v) / root_bc2 + eps))
        new_state[f"t/{key}"] = np.array(t, dtype=np.int64)
        new_state[f"m/{key}"] = np.asarray(m)
        new_state[f"v/{key}"] = np.asarray(v)
    return new_params, new_state


def cosine_lr(step, total_steps, base_lr, floor=0.0):
    """Per-iteration cosine annealing: base_lr at step 0, floor at step total_steps.

        lr(step) = floor + (base_lr - floor) * (1 + cos(pi * step / total_steps)) / 2
    Steps past total_steps stay at floor.
    """
    if total_steps < 1 or step < 0:
        raise ValueError(f"cosine_lr: need total_steps >= 1 and step >= 0, "
                         f"got step={step}, total_steps={total_steps}")
    progress = min(step, total_steps) / total_steps
    return floor + (base_lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
