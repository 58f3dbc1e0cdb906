"""Transposed convolution ("deconvolution"): the adjoint of a strided `Conv`.

Zeiler et al. 2010; Long et al. 2015, "Fully Convolutional Networks", arXiv:1411.4038;
Dumoulin & Visin 2016, "A guide to convolution arithmetic", arXiv:1603.07285.

Semantics (Keras `Conv2DTranspose` / PyTorch `ConvTranspose2d`): every input pixel stamps its
channel vector times the kernel onto the output at stride `strides`, i.e.
  full[i·s + a·d, j·s + b·d, o] += x[i, j, c] · kernel[a, b, c, o]
and the output is a window of `full`: 'SAME' gives H·s, 'VALID' gives H·s + max(k - s, 0)
(Keras), explicit (lo, hi) crops lo and hi from full (PyTorch `padding`).
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from cnnlab.layers._common import IntPair, PaddingLike, check_nhwc, pair
from cnnlab.layers.conv import DIMENSION_NUMBERS, default_kernel_init


def transpose_crop(n: int, k: int, s: int, d: int, padding) -> tuple[int, int]:
    """(lo, hi) to remove from the full scatter output along one axis (negative: zero-extend)."""
    k_eff = (k - 1) * d + 1
    full = (n - 1) * s + k_eff
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            target, lo = n * s, max(k_eff - s, 0) // 2
        elif mode == "VALID":
            target, lo = n * s + max(k_eff - s, 0), 0
        else:
            raise ValueError(f"padding must be 'SAME', 'VALID' or explicit; got {padding!r}")
        return lo, full - target - lo
    return tuple(padding)


class ConvTranspose(nn.Module):
    """Transposed k x k convolution, kernel HWIO (kh, kw, C_in, features); see module docstring."""

    features: int
    kernel_size: IntPair = 3
    strides: IntPair = 1
    _: dataclasses.KW_ONLY  # the rest by keyword only: Keras' positional order differs
    padding: PaddingLike = "SAME"
    dilation: IntPair = 1
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()

    def _crops(self, in_hw):
        (kh, kw), (sh, sw), (dh, dw) = (
            pair(self.kernel_size),
            pair(self.strides),
            pair(self.dilation),
        )
        p = self.padding
        if isinstance(p, int):
            p = ((p, p), (p, p))
        elif not isinstance(p, str):
            p = tuple(p)
            if len(p) == 2 and all(isinstance(v, int) for v in p):
                p = ((p[0], p[0]), (p[1], p[1]))
        ph, pw = (p, p) if isinstance(p, str) else p
        return (transpose_crop(in_hw[0], kh, sh, dh, ph), transpose_crop(in_hw[1], kw, sw, dw, pw))

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_nhwc(self, x)
        kh, kw = pair(self.kernel_size, "kernel_size")
        kernel = self.param(
            "kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), self.param_dtype
        )
        bias = (
            self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        strides, dilation = pair(self.strides, "strides"), pair(self.dilation, "dilation")
        # The scatter above is a stride-1 correlation of the zero-inserted input with the mirrored
        # kernel, padded by k_eff - 1 for the full output; cropping shrinks that padding.
        pads = []
        for k, d, (lo, hi) in zip((kh, kw), dilation, self._crops(x.shape[1:3]), strict=True):
            k_eff = (k - 1) * d + 1
            pads.append((k_eff - 1 - lo, k_eff - 1 - hi))
        y = lax.conv_general_dilated(
            x,
            kernel[::-1, ::-1],
            window_strides=(1, 1),
            padding=pads,
            lhs_dilation=strides,
            rhs_dilation=dilation,
            dimension_numbers=DIMENSION_NUMBERS,
        )  # (B, H_out, W_out, features)
        return y + bias if bias is not None else y

    def macs(self, in_shape, out_shape) -> int:
        """K_h·K_w·C_in·C_out·H_in·W_in per example: one stamp per input pixel, no zero products."""
        kh, kw = pair(self.kernel_size)
        return kh * kw * in_shape[1] * in_shape[2] * in_shape[3] * out_shape[3]
