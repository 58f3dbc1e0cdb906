"""Porting weights from Keras (TensorFlow's channels-last layers): which kernels change layout.

  cnnlab layer (kernel here)                 Keras layer (its kernel)              from_keras
  Conv, PointwiseConv (kh, kw, C_in/g, C_out)  Conv2D (the same)                     as is
  nn.Dense (in, out)                         Dense (the same)                      as is
  DepthwiseConv (kh, kw, 1, C_in·m)          DepthwiseConv2D (kh, kw, C_in, m)     reshape
  ConvTranspose (kh, kw, C_in, C_out)        Conv2DTranspose (kh, kw, C_out, C_in) swap axes 2, 3
  SeparableConv: its `depthwise` and `pointwise` rows are ported as DepthwiseConv and Conv.

Other differences a port must mind: cnnlab's convs default to `padding='SAME'` (Keras:
`'valid'`); every argument after `strides` is keyword-only here (Keras' `DepthwiseConv2D`
takes `depth_multiplier` 4th, where cnnlab has `dilation`); BatchNorm momentum 0.9 here is
PyTorch's 0.1, and Keras' `momentum=0.99` is flax's 0.99 (the same convention); Keras'
`epsilon` default is 1e-3 (cnnlab's blocks: 1e-5). Output channels of a depthwise conv are
ordered channel-major in both (channel c's multiplier j is output c·m + j).
"""

import numpy as np

KINDS = ("Conv2D", "Dense", "DepthwiseConv2D", "Conv2DTranspose")


def from_keras(kind: str, kernel) -> np.ndarray:
    """A Keras layer's kernel in the layout of the matching cnnlab layer (table above)."""
    kernel = np.asarray(kernel)
    if kind not in KINDS:
        raise ValueError(f"from_keras: kind must be one of {list(KINDS)}; got {kind!r}")
    if kind in ("Conv2D", "Dense"):
        return kernel
    if kernel.ndim != 4:
        raise ValueError(f"from_keras({kind!r}): a 4-D kernel is needed; got {kernel.shape}")
    if kind == "DepthwiseConv2D":
        kh, kw, c, m = kernel.shape
        return kernel.reshape(kh, kw, 1, c * m)
    return kernel.transpose(0, 1, 3, 2)  # Conv2DTranspose: (kh, kw, out, in) -> (kh, kw, in, out)
