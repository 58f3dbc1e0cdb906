"""Depthwise convolution: one k x k filter per input channel, no channel mixing.

Howard et al. 2017, "MobileNets", arXiv:1704.04861; Chollet 2017, "Xception", arXiv:1610.02357.

Two numerically equal implementations:
- 'xla': `lax.conv_general_dilated` with `feature_group_count=C_in` (fast on GPU/TPU);
- 'shifted': a sum of k·k shifted, strided slices times per-channel weights. XLA:CPU lowers the
  grouped conv to a slow generic loop (jax #23713, #13800, #26266); this form is several times
  faster there (see benchmarks/depthwise.py).
`impl='auto'` picks 'shifted' on CPU and 'xla' elsewhere.
"""

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from cnnlab.layers._common import (
    IntPair,
    PaddingLike,
    check_nhwc,
    conv_output_size,
    explicit_padding,
    pair,
)
from cnnlab.layers.conv import DIMENSION_NUMBERS, default_kernel_init

IMPLS = ("auto", "xla", "shifted")


def resolve_impl(impl: str) -> str:
    """'auto' -> 'shifted' on CPU, 'xla' on GPU/TPU."""
    if impl not in IMPLS:
        raise ValueError(f"depthwise impl must be one of {IMPLS}; got {impl!r}")
    if impl == "auto":
        return "shifted" if jax.default_backend() == "cpu" else "xla"
    return impl


def _taps(x, kh, kw, strides, dilation, h_out, w_out):
    """The k·k strided windows of padded x (..., H, W, C) that tap (i, j) multiplies."""
    lead = x.ndim - 3
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dilation[0], j * dilation[1]
            start = (0,) * lead + (r0, c0, 0)
            limit = (
                *x.shape[:lead],
                r0 + (h_out - 1) * strides[0] + 1,
                c0 + (w_out - 1) * strides[1] + 1,
                x.shape[-1],
            )
            yield lax.slice(x, start, limit, (1,) * lead + (strides[0], strides[1], 1))


def _shifted_forward(x, kernel, strides, pads, dilation):
    kh, kw, _, c_out = kernel.shape
    multiplier = c_out // x.shape[-1]
    if multiplier > 1:  # output channel c·m + j reads input channel c, as with feature_group_count
        x = jnp.repeat(x, multiplier, axis=-1)
    x = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    h_out = conv_output_size(x.shape[1], kh, strides[0], dilation[0], (0, 0))
    w_out = conv_output_size(x.shape[2], kw, strides[1], dilation[1], (0, 0))
    taps = _taps(x, kh, kw, strides, dilation, h_out, w_out)
    y = None
    for tap, w in zip(taps, kernel.reshape(-1, c_out), strict=True):
        y = tap * w if y is None else y + tap * w  # (B, H_out, W_out, C·m)
    return y


def _kernel_grad(x, dy, kernel_shape, strides, pads, dilation):
    """d loss / d kernel: per tap, sum over (b, h, w) of window * dy.

    Autodiff of the shifted form sums each tap's (B, H, W, C) product over its leading axes at
    once, a slow strided reduction on XLA:CPU. Looping over images and reducing each image's
    (k·k, H, W, C) products to (k·k, C) keeps every step's data in cache: ~5x faster than
    autodiff at 32x32x64, and unlike a full-size (k·k, H, W, C) accumulator it does not fall out of
    cache at 56x56 and 112x112 (1.5-2x faster there; benchmarks/README.md).
    """
    kh, kw, _, c_out = kernel_shape
    multiplier = c_out // x.shape[-1]
    if multiplier > 1:
        x = jnp.repeat(x, multiplier, axis=-1)
    h_out, w_out = dy.shape[1:3]
    dtype = jnp.result_type(x.dtype, dy.dtype, jnp.float32)  # accumulate in at least float32

    def image(b):  # (k·k, C·m): every tap's window of image b times dy[b], summed over (h, w)
        xb = jnp.pad(lax.dynamic_index_in_dim(x, b, keepdims=False), (pads[0], pads[1], (0, 0)))
        db = lax.dynamic_index_in_dim(dy, b, keepdims=False)
        taps = _taps(xb, kh, kw, strides, dilation, h_out, w_out)
        return jnp.stack([(tap * db).astype(dtype).sum((0, 1)) for tap in taps])

    # Padding per image inside the loop and starting from image 0 (not a zeros buffer) keeps the
    # padded batch and the zero fill from being materialised.
    acc = lax.fori_loop(1, x.shape[0], lambda b, acc: acc + image(b), image(0))
    return acc.reshape(kernel_shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def depthwise_shifted(x, kernel, strides, pads, dilation):
    """Depthwise conv as k·k shifted multiply-adds. x: (B,H,W,C), kernel: (kh,kw,1,C·m)."""
    return _shifted_forward(x, kernel, strides, pads, dilation)


def _fwd(x, kernel, strides, pads, dilation):
    return _shifted_forward(x, kernel, strides, pads, dilation), (x, kernel)


def _bwd(strides, pads, dilation, res, dy):
    x, kernel = res
    _, x_vjp = jax.vjp(lambda x: _shifted_forward(x, kernel, strides, pads, dilation), x)
    (dx,) = x_vjp(dy)
    dk = _kernel_grad(x, dy, kernel.shape, strides, pads, dilation).astype(kernel.dtype)
    return dx, dk


depthwise_shifted.defvjp(_fwd, _bwd)


class DepthwiseConv(nn.Module):
    """k x k depthwise conv to C_in·depth_multiplier channels; kernel (kh, kw, 1, C_in·m)."""

    kernel_size: IntPair = 3
    strides: IntPair = 1
    _: dataclasses.KW_ONLY  # the rest by keyword only: Keras' positional order differs
    padding: PaddingLike = "SAME"
    dilation: IntPair = 1
    depth_multiplier: int = 1
    use_bias: bool = True
    impl: str = "auto"  # 'auto' | 'xla' | 'shifted'
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = default_kernel_init
    bias_init: Any = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        check_nhwc(self, x)
        if self.depth_multiplier < 1:
            raise ValueError(
                f"DepthwiseConv '{self.name}': depth_multiplier must be >= 1; "
                f"got {self.depth_multiplier}"
            )
        c_out = x.shape[-1] * self.depth_multiplier
        kh, kw = pair(self.kernel_size, "kernel_size")
        kernel = self.param("kernel", self.kernel_init, (kh, kw, 1, c_out), self.param_dtype)
        bias = (
            self.param("bias", self.bias_init, (c_out,), self.param_dtype)
            if self.use_bias
            else None
        )
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        strides, dilation = pair(self.strides, "strides"), pair(self.dilation, "dilation")
        pads = explicit_padding(self.padding, x.shape[1:3], (kh, kw), strides, dilation)
        if resolve_impl(self.impl) == "shifted":
            y = depthwise_shifted(x, kernel, strides, pads, dilation)
        else:
            y = lax.conv_general_dilated(
                x,
                kernel,
                window_strides=strides,
                padding=pads,
                rhs_dilation=dilation,
                dimension_numbers=DIMENSION_NUMBERS,
                feature_group_count=x.shape[-1],
            )
        return y + bias if bias is not None else y  # (B, H_out, W_out, C_in·m)

    def macs(self, in_shape, out_shape) -> int:
        """K_h·K_w·(C_in·m)·H_out·W_out per example (one k x k filter per output channel)."""
        kh, kw = pair(self.kernel_size)
        return kh * kw * out_shape[1] * out_shape[2] * out_shape[3]
