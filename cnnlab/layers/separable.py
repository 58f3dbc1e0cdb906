"""Depthwise-separable and spatially separable convolutions.

Depthwise-separable: Sifre 2014; Chollet 2017, "Xception", arXiv:1610.02357 (Keras SeparableConv2D);
Howard et al. 2017, "MobileNets", arXiv:1704.04861.
Spatially separable (k x 1 then 1 x k): Szegedy et al. 2016, "Rethinking the Inception
Architecture", arXiv:1512.00567; Sobel's kernel [1,2,1]^T [1,0,-1] is the textbook rank-1 example.
"""

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from cnnlab.layers._common import IntPair, PaddingLike, explicit_padding, pair
from cnnlab.layers.conv import Conv, PointwiseConv, default_kernel_init
from cnnlab.layers.depthwise import DepthwiseConv


class SeparableConv(nn.Module):
    """Depthwise k x k then pointwise 1x1, with Keras `SeparableConv2D` semantics.

    As in Keras, the depthwise step has no bias by default (`depthwise_bias=True` adds one) and the
    pointwise step has `use_bias`. Parameters: k·k·C_in·m + C_in·m·C_out (+ C_out bias).
    """

    features: int
    kernel_size: IntPair = 3
    strides: IntPair = 1
    _: dataclasses.KW_ONLY  # the rest by keyword only: Keras' positional order differs
    padding: PaddingLike = "SAME"
    dilation: IntPair = 1
    depth_multiplier: int = 1
    use_bias: bool = True
    depthwise_bias: bool = False
    impl: str = "auto"  # depthwise implementation, see DepthwiseConv
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = default_kernel_init

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init)
        x = DepthwiseConv(
            self.kernel_size,
            self.strides,
            padding=self.padding,
            dilation=self.dilation,
            depth_multiplier=self.depth_multiplier,
            use_bias=self.depthwise_bias,
            impl=self.impl,
            name="depthwise",
            **common,
        )(x)  # (B, H_out, W_out, C_in·m)
        return PointwiseConv(self.features, use_bias=self.use_bias, name="pointwise", **common)(x)


class SpatialSeparableConv(nn.Module):
    """k x 1 conv (`column`, C_in -> mid) then 1 x k conv (`row`, mid -> features).

    With one channel in and out this equals a k x k conv whose kernel is outer(column, row):
    2k multiplies per output instead of k², for exactly the rank-1 kernels (see `factorize_rank1`).
    `mid_features` defaults to `features`. Strides/dilation/padding split per axis.
    """

    features: int
    kernel_size: int = 3
    strides: IntPair = 1
    _: dataclasses.KW_ONLY  # the rest by keyword only: Keras' positional order differs
    padding: PaddingLike = "SAME"
    dilation: IntPair = 1
    mid_features: int | None = None
    use_bias: bool = True
    column_bias: bool = False
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Any = default_kernel_init

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k = self.kernel_size
        (sh, sw), (dh, dw) = pair(self.strides, "strides"), pair(self.dilation, "dilation")
        (top_bottom, left_right) = explicit_padding(
            self.padding, x.shape[1:3], (k, k), (sh, sw), (dh, dw)
        )
        common = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=self.kernel_init)
        x = Conv(
            self.mid_features or self.features,
            (k, 1),
            (sh, 1),
            padding=(top_bottom, (0, 0)),
            dilation=(dh, 1),
            use_bias=self.column_bias,
            name="column",
            **common,
        )(x)  # (B, H_out, W, mid)
        return Conv(
            self.features,
            (1, k),
            (1, sw),
            padding=((0, 0), left_right),
            dilation=(1, dw),
            use_bias=self.use_bias,
            name="row",
            **common,
        )(x)  # (B, H_out, W_out, features)


class Rank1Factors(NamedTuple):
    """`kernel ≈ outer(column, row)`; `exact` when the kernel has rank <= 1 (error ~ 0)."""

    column: np.ndarray  # (kh,)
    row: np.ndarray  # (kw,)
    error: float  # Frobenius norm of kernel - outer(column, row)
    rank: int
    exact: bool


def factorize_rank1(kernel, rtol: float = 1e-6) -> Rank1Factors:
    """Split a 2-D kernel into column x row: exact when its rank is 1, else the best rank-1 fit.

    The best rank-1 approximation in Frobenius norm is the leading singular pair (Eckart-Young).
    Scaled so the column's first non-negligible entry is 1, so Sobel's kernel comes back as
    integers: [[1,0,-1],[2,0,-2],[1,0,-1]] -> column [1,2,1], row [1,0,-1].
    """
    k = np.asarray(kernel, dtype=np.float64)
    if k.ndim != 2:
        raise ValueError(f"factorize_rank1 needs a 2-D (kh, kw) kernel; got shape {k.shape}")
    u, s, vt = np.linalg.svd(k)
    tol = rtol * max(s[0], np.finfo(np.float64).tiny)
    rank = int(np.sum(s > tol))
    column, row = u[:, 0] * s[0], vt[0]
    nonzero = np.flatnonzero(np.abs(column) > tol)
    if nonzero.size:
        scale = column[nonzero[0]]
        column, row = column / scale, row * scale
    error = float(np.linalg.norm(k - np.outer(column, row)))
    return Rank1Factors(column, row, error, rank, rank <= 1)
