"""Conv variants replacing one 3x3 layer: parameters, MACs and measured fwd+bwd speed-up.

    ./run python -m benchmarks.conv_variants [--workdir=DIR] [--config.size=56 ...]

Writes results.csv / results.md to WORKDIR (default runs/conv_variants), which is printed.
"""

import csv
import io
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags, logging
from ml_collections import config_flags
from tqdm import tqdm

import cnnlab
from cnnlab import layers as L

DEFAULT_CONFIG = str(Path(__file__).parent / "conv_variants_config.py")
_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Grid config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (default runs/<config name>).")


def variants(c):
    """Name -> layer mapping C_in to C_out channels at the same spatial size."""
    k, out = c.kernel, c.out_channels
    return {
        "standard": L.Conv(out, k),
        "pointwise": L.PointwiseConv(out),
        "depthwise": L.DepthwiseConv(k),  # keeps C_in channels
        "separable": L.SeparableConv(out, k),
        "spatial_separable": L.SpatialSeparableConv(out, k),
        "grouped_g4": L.Conv(out, k, groups=4),
        "dilated_d2": L.Conv(out, k, dilation=2),
    }


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_conv_variants(c, workdir: Path) -> str:
    from benchmarks.timing import markdown_table, time_interleaved

    table = variants(c)
    unknown = sorted(set(c.variants) - set(table))
    if unknown:
        raise ValueError(f"config.variants: unknown {unknown}; allowed: {sorted(table)}")
    x = jax.random.normal(jax.random.key(0), (c.batch, c.size, c.size, c.in_channels))
    rows, steps = [], {}
    for name in tqdm(c.variants, desc="building variants", unit="variant"):
        layer = table[name]
        s = cnnlab.summary(layer, x[:1])
        v = layer.init(jax.random.key(1), x)
        step = jax.jit(jax.grad(lambda v, x, layer=layer: jnp.sum(layer.apply(v, x) ** 2)))
        steps[name] = lambda step=step, v=v: step(v, x)
        rows.append(
            {
                "variant": name,
                "out_channels": s.rows[-1].output_shape[-1],
                "params": s.total_params,
                "macs": s.macs,
            }
        )
    print(f"timing {len(steps)} variants, {c.repeats} interleaved repeats ...", file=sys.stderr)
    times = time_interleaved(steps, c.repeats)
    base = next(r for r in rows if r["variant"] == c.variants[0])
    for r in rows:
        r["fwd_bwd_ms"] = round(1e3 * times[r["variant"]], 3)
        r["mac_ratio"] = round(base["macs"] / r["macs"], 2)
        r["speedup"] = round(times[base["variant"]] / times[r["variant"]], 2)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(workdir / "results.csv", buf.getvalue())
    md = (
        f"# Conv variants: {c.in_channels} -> {c.out_channels} channels, {c.kernel}x{c.kernel}, "
        f"{c.size}x{c.size}, batch {c.batch}, backend {jax.default_backend()}\n\n"
        f"MACs per example (analytic); time = median fwd+bwd of {c.repeats} interleaved runs; "
        f"ratios are relative to `{base['variant']}`.\n\n"
        + markdown_table(
            [
                "variant",
                "out ch",
                "params",
                "MACs",
                f"MAC ratio vs {base['variant']}",
                "fwd+bwd ms",
                "measured speed-up",
            ],
            [
                [
                    r["variant"],
                    str(r["out_channels"]),
                    f"{r['params']:,}",
                    f"{r['macs']:,}",
                    f"{r['mac_ratio']}x",
                    f"{r['fwd_bwd_ms']}",
                    f"{r['speedup']}x",
                ]
                for r in rows
            ],
        )
        + "\n"
    )
    write_atomic(workdir / "results.md", md)
    return md


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # hide JAX's backend probing chatter
    c = _CONFIG.value
    workdir = Path(_WORKDIR.value or Path("runs") / c.name)
    if workdir.exists() and not workdir.is_dir():
        sys.exit(f"--workdir={workdir} exists and is not a directory; pass another path")
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"workdir: {workdir.resolve()}")
    try:
        print(run_conv_variants(c, workdir))
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"wrote {workdir / 'results.md'} and {workdir / 'results.csv'}")


if __name__ == "__main__":
    app.run(main)
