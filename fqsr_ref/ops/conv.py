"""2-D convolution, forward and backward, without an im2col copy of the big side.

Layouts: x (N, C_in, H, W), w (C_out, C_in, K, K) with K odd, zero padding
p = K // 2, stride 1 or 2, output (N, C_out, H_out, W_out) with
H_out = (H + 2p - K) // stride + 1 (= H for stride 1, ceil(H / 2) for stride 2).
Float32 or float64; the output keeps the input dtype.

How it is fast ("shifted GEMM"). The input is copied once into a channel-major,
zero-padded grid: a flat buffer in which one channel is a row of
R = N * Hq * Wq numbers, Hq = H + p, Wq = W + p, pixel (n, h, w) at column
j = n*Hq*Wq + h*Wq + w. The p zero columns after each row and the p zero rows
after each image are the right/bottom padding of one row/image and the
left/top padding of the next. Output (n, h, w) sits at the same column j, and
tap (kh, kw) of its receptive field at column j + o, o = (kh-p)*Wq + (kw-p).
So for each tap the whole convolution is one GEMM
    out[:, j] += w[:, :, kh, kw] @ grid[:, j + o]      for every column j,
where grid[:, j + o] is the flat buffer read from offset o: a contiguous
(C_in, R) matrix, no copy. Columns on the padding are junk and are never read
back; valid outputs only ever read valid pixels or zeros; the buffer has s =
p*Wq + p zeros at each end so every shifted view stays in bounds. The GEMMs
accumulate in place through BLAS gemm with beta = 1.

When one side has few channels (the 3-channel image side of the head and tail
convs), K*K GEMMs with an inner size of 3 are memory bound, so that side is
stacked instead: the K*K shifted views of a 3-channel grid are copied into one
(K*K*3, R) matrix (3*K*K rows: cheap) and the convolution is a single GEMM
(see _plan and _weight_plan for the rules).

Backward: dy is put on the same grid (zero on the padding), dw[:, :, kh, kw] =
dy_grid @ x_grid[:, j + o].T on the same shifted views, and dx is the stride-1
correlation of dy with the kernel flipped in both spatial axes and its channel
axes swapped, which reuses the forward.

Stride 2 computes the stride-1 result and keeps every second row and column
(backward: dy is spread on the stride-1 grid with zeros between): four times
the work, kept simple because only the small SRGAN discriminator uses it.
"""
from typing import NamedTuple

import numpy as np
from scipy.linalg import blas

from ._checks import check_float, check_rank

PLANS = ("shift", "stack_in", "stack_out")


class Grid(NamedTuple):
    """Geometry of the zero-padded channel-major grid of one NCHW tensor."""
    n: int
    h: int
    w: int
    pad: int
    row: int    # Wq = W + pad: a row and the pad zeros it shares with the next row
    image: int  # Hq * Wq = (H + pad) * Wq
    rows: int   # R = N * Hq * Wq, the length of one channel
    guard: int  # s = pad * Wq + pad, the largest tap offset, zeros at each end


class ConvCache(NamedTuple):
    x_buf: np.ndarray   # grid of x, see _to_grid
    grid: Grid
    w: np.ndarray       # (C_out, C_in, K, K)
    has_bias: bool
    stride: int
    x_stack: object     # (K*K*C_in, R) stacked views of x when both passes use them, else None


def _geometry(n, h, w, k):
    pad = k // 2
    row = w + pad
    image = (h + pad) * row
    return Grid(n, h, w, pad, row, image, n * image, pad * row + pad)


def _to_grid(x, g):
    """(N, C, H, W) -> flat [s zeros | C channels of R | s zeros].

    Within a channel, pixel (n, h, w) sits at column n*Hq*Wq + h*Wq + w; the
    pad columns after each row and the pad rows after each image are zero, and
    they double as the left/top padding of the next row/image.
    """
    c = x.shape[1]
    buf = np.empty(c * g.rows + 2 * g.guard, dtype=x.dtype)
    core = buf[g.guard:g.guard + c * g.rows].reshape(c, g.n, g.h + g.pad, g.row)
    core[:, :, :g.h, :g.w] = x.transpose(1, 0, 2, 3)
    # zero only what x does not cover: the guards and the pad columns and rows
    buf[:g.guard] = 0
    buf[g.guard + c * g.rows:] = 0
    core[:, :, :g.h, g.w:] = 0
    core[:, :, g.h:, :] = 0
    return buf


def _view(buf, g, c, shift):
    """(c, R) matrix whose column j is flat column j + shift of the core: no copy.

    With |shift| <= s this is channel rows read from a tap offset; larger
    shifts step whole blocks of c rows (used for stacked partial products).
    """
    start = g.guard + shift
    return buf[start:start + c * g.rows].reshape(c, g.rows)


def _offsets(g, k):
    """Tap (kh, kw) of the output at column j reads input column j + offset."""
    return [(kh - g.pad) * g.row + (kw - g.pad) for kh in range(k) for kw in range(k)]


def _stack(buf, g, c, shifts):
    """(len(shifts) * c, R): the shifted views one under the other (a copy)."""
    out = np.empty((len(shifts) * c, g.rows), dtype=buf.dtype)
    for i, shift in enumerate(shifts):
        out[i * c:(i + 1) * c] = _view(buf, g, c, shift)
    return out


def _plan(c_in, c_out, k):
    """Which product computes a correlation from c_in to c_out channels.

    "shift": K*K accumulating GEMMs on shifted views (no copy);
    "stack_in": copy the K*K shifted views of the input under each other, then
    one GEMM (few input channels: the copy is small, the GEMM's inner size
    c_in*K*K instead of c_in);
    "stack_out": one GEMM computes every tap's partial products, then K*K
    shifted adds of c_out rows (few output channels).
    All three give the same result on any shape; the choice is only speed. The
    thresholds come from single-core timings of every plan on the SRResNet,
    EDSR and tiny-model layer shapes (3/8/16/32/64 channels, K = 3, 5, 9), and
    of the upsampler's dx (256 -> 64 channels: stack_out 31 ms, shift 46 ms; its
    K*K*c_out partial rows are memory the shift plan does not need).
    """
    if k > 1 and c_in < 8 and c_in < c_out:
        return "stack_in"
    if k > 1 and c_out < c_in:
        return "stack_out"
    return "shift"


def _weight_plan(c_in, c_out, k):
    """Which product computes dw: stack the K*K shifted views of the smaller side
    when it has at most 16 channels (one GEMM with a K*K times larger output),
    else K*K GEMMs on shifted views. Same measurements as _plan."""
    if k > 1 and min(c_in, c_out) <= 16 and c_in != c_out:
        return "stack_in" if c_in < c_out else "stack_out"
    return "shift"


def _correlate(buf, g, w, stacked=None):
    """Stride-1 correlation on the grid: (C_out, R); column j holds output (n, h, w)."""
    c_out, c_in, k, _ = w.shape
    offsets = _offsets(g, k)
    taps = w.transpose(2, 3, 0, 1).reshape(k * k, c_out, c_in)
    plan = _plan(c_in, c_out, k)
    if plan == "stack_in":
        # inner size c_in*K*K instead of c_in: one GEMM over stacked views
        if stacked is None:
            stacked = _stack(buf, g, c_in, offsets)
        return np.matmul(taps.transpose(1, 0, 2).reshape(c_out, -1), stacked)
    if plan == "stack_out":
        # all taps' partial products in one GEMM, then K*K shifted adds of c_out
        # rows; partial is zero on junk columns (x is), so reads that spill into
        # the neighbouring block or the guard only ever meet zeros or junk
        partial = np.zeros(k * k * c_out * g.rows + 2 * g.guard, dtype=buf.dtype)
        np.matmul(taps.reshape(-1, c_in), _view(buf, g, c_in, 0),
                  out=_view(partial, g, k * k * c_out, 0))
        out = _view(partial, g, c_out, offsets[0]).copy()
        for i in range(1, len(offsets)):
            out += _view(partial, g, c_out, i * c_out * g.rows + offsets[i])
        return out
    gemm = blas.get_blas_funcs("gemm", dtype=buf.dtype)
    taps = np.ascontiguousarray(taps)
    out = np.matmul(taps[0], _view(buf, g, c_in, offsets[0]))
    for i in range(1, len(offsets)):
        # Fortran view: out.T (R, C_out) += view.T (R, C_in) @ tap.T (C_in, C_out);
        # every operand is Fortran-contiguous, so f2py passes it without a copy
        # (and if it ever copied, using the returned array keeps the result right)
        out = gemm(1.0, _view(buf, g, c_in, offsets[i]).T, taps[i].T, beta=1.0,
                   c=out.T, overwrite_c=1).T
    return out


def _from_grid(out, g, stride, bias=None):
    """(C, R) grid result -> (N, C, H_out, W_out) C-contiguous, plus optional bias."""
    c = out.shape[0]
    valid = out.reshape(c, g.n, g.image // g.row, g.row)[:, :, :g.h:stride, :g.w:stride]
    y = np.empty((g.n, c) + valid.shape[2:], dtype=out.dtype)
    y[...] = valid.transpose(1, 0, 2, 3)
    if bias is not None:
        y += bias[:, None, None]
    return y


def _check(x, w, b, stride):
    op = "conv2d"
    check_float(op, **(dict(x=x, w=w) if b is None else dict(x=x, w=w, b=b)))
    check_rank(op, "x", x, 4, "4-D (N, C_in, H, W)")
    check_rank(op, "w", w, 4, "4-D (C_out, C_in, K, K)")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"{op}: channel mismatch, x {x.shape} has C_in={x.shape[1]}, "
                         f"w {w.shape} expects C_in={w.shape[1]}")
    if w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0:
        raise ValueError(f"{op}: kernel must be square and odd, got w {w.shape}")
    if min(x.shape) < 1 or min(w.shape) < 1:
        raise ValueError(f"{op}: empty tensor, x {x.shape}, w {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{op}: bias must be ({w.shape[0]},) for w {w.shape}, got {b.shape}")
    if stride not in (1, 2):
        raise ValueError(f"{op}: stride must be 1 or 2, got {stride!r}")


def conv2d_forward(x, w, b=None, stride=1):
    """Convolution (cross-correlation, as in every DL framework) with zero "same" padding.

    x: (N, C_in, H, W) float32 or float64.
    w: (C_out, C_in, K, K), same dtype, K odd; padding K // 2.
    b: (C_out,) or None.
    stride: 1, or 2 (SRGAN discriminator).
    Returns y (N, C_out, H_out, W_out), H_out = (H + 2*(K//2) - K) // stride + 1,
    and the cache for conv2d_backward.
    """
    _check(x, w, b, stride)
    g = _geometry(x.shape[0], x.shape[2], x.shape[3], w.shape[2])
    buf = _to_grid(x, g)
    c_out, c_in, k, _ = w.shape
    stacked = None
    if _plan(c_in, c_out, k) == _weight_plan(c_in, c_out, k) == "stack_in":
        # the head conv (3 input channels): dw needs the same stacked views
        stacked = _stack(buf, g, c_in, _offsets(g, k))
    y = _from_grid(_correlate(buf, g, w, stacked), g, stride, b)
    return y, ConvCache(buf, g, w, b is not None, stride, stacked)


def conv2d_backward(dy, cache):
    """Gradients of conv2d_forward.

    dy: (N, C_out, H_out, W_out), the dtype of the forward.
    Returns dx (N, C_in, H, W), dw (C_out, C_in, K, K), db (C_out,) or None when
    the forward had no bias.
    """
    x_buf, g, w, has_bias, stride, x_stack = cache
    c_out, c_in, k, _ = w.shape
    expect = (g.n, c_out, (g.h - 1) // stride + 1, (g.w - 1) // stride + 1)
    check_float("conv2d_backward", dy=dy, w=w)
    if dy.shape != expect:
        raise ValueError(f"conv2d_backward: dy must be {expect}, got {dy.shape}")
    if stride != 1:
        full = np.zeros((g.n, c_out, g.h, g.w), dtype=dy.dtype)
        full[:, :, ::stride, ::stride] = dy
        dy = full
    # dy sits on the same grid as x, zero on junk columns, so junk inputs that
    # the shifted views pair with it contribute nothing to dw
    dy_buf = _to_grid(dy, g)
    offsets = _offsets(g, k)
    plan = _weight_plan(c_in, c_out, k)
    if plan == "stack_in":
        stacked = _stack(x_buf, g, c_in, offsets) if x_stack is None else x_stack
        dw = np.matmul(_view(dy_buf, g, c_out, 0), stacked.T)
        dw = dw.reshape(c_out, k, k, c_in).transpose(0, 3, 1, 2)
    elif plan == "stack_out":
        # dw_o = sum_j dy[:, j] x[:, j + o]^T = sum_j dy[:, j - o] x[:, j]^T:
        # stack the few shifted dy rows instead of the many x rows
        stacked = _stack(dy_buf, g, c_out, [-o for o in offsets])
        dw = np.matmul(stacked, _view(x_buf, g, c_in, 0).T)
        dw = dw.reshape(k, k, c_out, c_in).transpose(2, 3, 0, 1)
    else:
        dy_rows = _view(dy_buf, g, c_out, 0)
        dw = np.empty((k, k, c_out, c_in), dtype=dy.dtype)
        for i, o in enumerate(offsets):
            np.matmul(dy_rows, _view(x_buf, g, c_in, o).T, out=dw[i // k, i % k])
        dw = dw.transpose(2, 3, 0, 1)
    # dx[j] = sum_o w_o^T dy[j - o]: a correlation with the flipped, transposed kernel
    flipped = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    dx = _from_grid(_correlate(dy_buf, g, flipped), g, 1)
    # summed along the grid's contiguous rows (their junk columns are zero)
    db = _view(dy_buf, g, c_out, 0).sum(axis=1) if has_bias else None
    return dx, np.ascontiguousarray(dw), db


def conv2d_reference(x, w, b=None, stride=1):
    """Plain nested-loop twin of conv2d_forward (slow; tests only). Same shapes."""
    _check(x, w, b, stride)
    n, c_in, h, wd = x.shape
    c_out, _, k, _ = w.shape
    pad = k // 2
    h_out = (h + 2 * pad - k) // stride + 1
    w_out = (wd + 2 * pad - k) // stride + 1
    y = np.zeros((n, c_out, h_out, w_out), dtype=x.dtype)
    for b_i in range(n):
        for co in range(c_out):
            for out_y in range(h_out):
                for out_x in range(w_out):
                    acc = b[co] if b is not None else 0.0
                    in_y_origin = out_y * stride - pad
                    in_x_origin = out_x * stride - pad
                    for ci in range(c_in):
                        for kh in range(k):
                            for kw in range(k):
                                in_y = in_y_origin + kh
                                in_x = in_x_origin + kw
                                if 0 <= in_y < h and 0 <= in_x < wd:
                                    acc += x[b_i, ci, in_y, in_x] * w[co, ci, kh, kw]
                    y[b_i, co, out_y, out_x] = acc
    return y
