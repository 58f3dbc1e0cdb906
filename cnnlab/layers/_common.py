"""Argument normalisation shared by the conv layers: pairs, padding, output sizes, input checks."""

from collections.abc import Sequence

import jax.numpy as jnp

# 'SAME' | 'VALID' | p | (p_h, p_w) | ((top, bottom), (left, right))
PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
IntPair = int | Sequence[int]


def pair(value: IntPair, name: str = "value") -> tuple[int, int]:
    """`3 -> (3, 3)`; `(3, 1) -> (3, 1)`."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints (height, width); got {value!r}")
    return value


def explicit_padding(
    padding: PaddingLike,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    strides: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Resolve any padding spec to ((top, bottom), (left, right)): 'SAME' as TF/XLA do (a
    stride-2 conv on an even input pads bottom/right only), 'SYMMETRIC' as PyTorch's
    `padding=(k - 1) // 2` does (the same amount on both sides, whatever the stride)."""
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0), (0, 0))
        if mode == "SYMMETRIC":
            return tuple(((k - 1) * d // 2,) * 2 for k, d in zip(kernel_hw, dilation, strict=True))
        if mode != "SAME":
            raise ValueError(
                "padding must be 'SAME', 'SYMMETRIC', 'VALID', an int or explicit pairs; "
                f"got {padding!r}"
            )
        pads = []
        for n, k, s, d in zip(in_hw, kernel_hw, strides, dilation, strict=True):
            k_eff = (k - 1) * d + 1
            out = -(-n // s)
            total = max((out - 1) * s + k_eff - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    padding = tuple(padding)
    if len(padding) == 2 and all(isinstance(p, int) for p in padding):
        return ((padding[0], padding[0]), (padding[1], padding[1]))
    if len(padding) == 2 and all(len(p) == 2 for p in padding):
        return tuple((int(a), int(b)) for a, b in padding)
    raise ValueError(
        f"padding must be 'SAME', 'SYMMETRIC', 'VALID', an int or explicit pairs; got {padding!r}"
    )


def conv_output_size(n: int, k: int, s: int, d: int, pad: tuple[int, int]) -> int:
    """Output length of a strided, dilated, padded convolution along one axis."""
    return (n + pad[0] + pad[1] - ((k - 1) * d + 1)) // s + 1


def check_nhwc(layer, x: jnp.ndarray) -> None:
    """Raise a clear error unless `x` is a rank-4 NHWC batch."""
    if x.ndim != 4:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' expects NHWC input (batch, height, width, "
            f"channels); got shape {tuple(x.shape)}. Add a batch axis with x[None] if needed."
        )
