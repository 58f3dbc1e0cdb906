"""Channel rounding and compound scaling.

`make_divisible` is the rounding of MobileNetV2 / EfficientNet reference code (torchvision,
TF models): nearest multiple of 8, never more than 10% below the requested width.
Tan & Le 2019, "EfficientNet", arXiv:1905.11946, eq. 3: depth α^φ, width β^φ, resolution γ^φ
with α=1.2, β=1.1, γ=1.15 (α·β²·γ² ≈ 2: each φ step doubles the MACs).
"""

import math


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of `divisor`, never dropping more than 10%."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def scale_depth(repeats: int, depth_multiplier: float) -> int:
    return math.ceil(depth_multiplier * repeats)


def compound_scale(phi: float, alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15):
    """(depth, width, resolution) multipliers for compound coefficient φ."""
    return alpha**phi, beta**phi, gamma**phi
