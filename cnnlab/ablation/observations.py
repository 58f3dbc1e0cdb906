"""What a grid's recorded diagnostics show, in words: per-layer gradient norms and activation
sparsity of the deepest cells, and what a skip axis's plain and residual twins share. Description
only: no interval or test here (those are `cnnlab.ablation.findings`), so a sentence here never
reads as a verdict.
"""

import itertools
import statistics

from cnnlab.ablation.aggregate import SEED, Axis, gradient_cells, row_in
from cnnlab.ablation.grid import label
from cnnlab.ablation.result import CellResult


def gradient_findings(results: list[CellResult], axes: list[Axis]) -> list[str]:
    """Per-layer gradient norms and activation sparsity of the `gradient_cells`."""
    where, c, picked = gradient_cells(results, axes)
    out = []
    for v, r in picked.items():
        for step in sorted(r.grad_norms, key=int):
            norms = [x for _, x in r.grad_norms[step]]
            when = "at initialisation" if step == "0" else f"at step {step}"
            zeros = sum(x == 0 for x in norms)
            if zeros:  # e.g. zero_init_residual: no gradient reaches a zeroed branch's convs
                out.append(
                    f"Gradient norms {when}, {where}{c.name}={v}: "
                    f"{zeros} of {len(norms)} kernels get exactly zero gradient."
                )
                norms = [x for x in norms if x > 0]
            if len(norms) < 3:
                continue
            spread = max(norms) / min(norms)
            # trend over the hidden kernels (the 1-channel stem and the classifier are outliers)
            hidden = norms[:-1]
            third = max(1, len(hidden) // 3)
            ratio = statistics.median(hidden[:third]) / statistics.median(hidden[-third:])
            trend = "grow toward the input (explode)" if ratio > 1 else "shrink toward it (vanish)"
            out.append(
                f"Gradient norms {when}, {where}{c.name}={v} (seed "
                f"{label(r.overrides.get(SEED, 0))}): {min(norms):.3g} to {max(norms):.3g} "
                f"({spread:.3g}x over {len(norms)} kernels); median of the first third of the "
                f"hidden kernels / median of the last third = {ratio:.3g}: gradients {trend}."
            )
        sp = list(r.sparsity.values())
        if len(sp) >= 3:
            third = max(1, len(sp) // 3)
            out.append(
                f"Activation sparsity (zero ReLU outputs), {where}{c.name}={v}: "
                f"first third of blocks {sum(sp[:third]) / third:.3f}, last third "
                f"{sum(sp[-third:]) / third:.3f}."
            )
    return out


def twins_note(rows: list[dict], axes: list[Axis], recipe: dict) -> list[str]:
    """What a skip axis's plain and residual twins share and where they differ."""
    skip = next((a for a in axes if a.name == "skip"), None)
    if skip is None:
        return []
    others = [a for a in axes if a is not skip]
    same = all(
        len({r["params"] for r in rows if row_in(r, others, combo)}) <= 1
        for combo in itertools.product(*(a.values for a in others))
    )
    text = (
        "Plain (skip=False) and residual (skip=True) twins share the architecture, "
        + ("the parameter count (equal in every configuration, checked), " if same else "")
        + "the initialisation, data order, augmentation and recipe of each seed; they differ "
        "only in the shortcut addition"
    )
    if recipe.get("zero_init_residual"):
        text += (
            " and in one initialisation: zero_init_residual starts each residual block's last "
            "BatchNorm scale at 0, which the plain twin cannot use (its blocks would output zero)"
        )
    return [text + "."]
