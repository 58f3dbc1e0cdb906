"""Conv-variant cost grid: every conv variant replacing one 3x3 layer, measured side by side.

    ./run python -m benchmarks.conv_variants

Writes results.csv / results.md to the workdir: parameters, MACs (analytic, per example), and
median forward+backward time per variant with its speed-up over the standard conv. On a 2-core CPU
it takes about a minute; the MAC ratios are exact, the time ratios are measurements.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "conv_variants"
    c.batch = 16  # examples per timed call
    c.size = 32  # input height = width
    c.in_channels = 64
    c.out_channels = 64
    c.kernel = 3
    c.repeats = 5  # interleaved timing repeats; the median is reported
    # Variants to compare; each is a key of benchmarks.conv_variants.variants().
    c.variants = (
        "standard",
        "pointwise",
        "depthwise",
        "separable",
        "spatial_separable",
        "grouped_g4",
        "dilated_d2",
    )
    return c
