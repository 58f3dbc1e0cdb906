"""Independent numpy references: explicit loops over output positions, in float64."""

import numpy as np


def same_pads(n, k, s, d):
    """TensorFlow's documented 'SAME' rule: output ceil(n/s), extra padding at the end."""
    k_eff = (k - 1) * d + 1
    total = max((-(-n // s) - 1) * s + k_eff - n, 0)
    return (total // 2, total - total // 2)


def conv2d(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1, flip=False):
    """Grouped, strided, dilated cross-correlation. x (B,H,W,C), w (kh,kw,C/groups,O)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    if flip:
        w = w[::-1, ::-1]
    kh, kw, cg, o = w.shape
    og = o // groups
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    h_out = (xp.shape[1] - (kh - 1) * dilation[0] - 1) // strides[0] + 1
    w_out = (xp.shape[2] - (kw - 1) * dilation[1] - 1) // strides[1] + 1
    out = np.zeros((x.shape[0], h_out, w_out, o))
    rows, cols = np.arange(kh) * dilation[0], np.arange(kw) * dilation[1]
    for i in range(h_out):
        for j in range(w_out):
            patch = xp[:, i * strides[0] + rows][:, :, j * strides[1] + cols]  # (B,kh,kw,C)
            for g in range(groups):
                out[:, i, j, g * og : (g + 1) * og] = np.einsum(
                    "bhwc,hwco->bo",
                    patch[..., g * cg : (g + 1) * cg],
                    w[..., g * og : (g + 1) * og],
                )
    return out


def depthwise2d(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1)):
    """Per-channel loop: output channel c·m + j is channel c correlated with its own filter."""
    x = np.asarray(x, np.float64)
    c, c_out = x.shape[-1], w.shape[-1]
    m = c_out // c
    outs = [
        conv2d(x[..., ch : ch + 1], w[..., ch * m + j : ch * m + j + 1], strides, pads, dilation)
        for ch in range(c)
        for j in range(m)
    ]
    return np.concatenate(outs, axis=-1)


def conv_transpose2d(x, w, strides=(1, 1), dilation=(1, 1), crops=((0, 0), (0, 0))):
    """Scatter definition: each input pixel stamps x[i,j,:] @ w[a,b] at (i·s + a·d, j·s + b·d)."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    b, h, wd, _ = x.shape
    kh, kw, _, o = w.shape
    full = np.zeros(
        (
            b,
            (h - 1) * strides[0] + (kh - 1) * dilation[0] + 1,
            (wd - 1) * strides[1] + (kw - 1) * dilation[1] + 1,
            o,
        )
    )
    for i in range(h):
        for j in range(wd):
            for a in range(kh):
                for c in range(kw):
                    full[:, i * strides[0] + a * dilation[0], j * strides[1] + c * dilation[1]] += (
                        x[:, i, j] @ w[a, c]
                    )
    (t, bo), (le, r) = crops
    # negative crops mean zero-extension (Keras 'VALID' with k < s, 'SAME' with k < s)
    full = np.pad(full, ((0, 0), (max(-t, 0), max(-bo, 0)), (max(-le, 0), max(-r, 0)), (0, 0)))
    t, bo, le, r = max(t, 0), max(bo, 0), max(le, 0), max(r, 0)
    return full[:, t : full.shape[1] - bo, le : full.shape[2] - r]


def assert_close(actual, expected, tol=1e-4):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=tol, atol=tol)
