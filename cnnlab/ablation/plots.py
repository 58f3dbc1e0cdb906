"""The report's figures, as small multiples over whatever axes the grid names.

- curves.png: training and test error against step (the ResNet paper's figures 1 and 6), one
  panel per configuration of the categorical axes, one line per value of the first numeric axis,
  shaded band = ± one seed-std;
- accuracy_vs_<axis>.png: test accuracy and final training loss against the numeric axis;
- side_heads.png: each side head's test accuracy over training, one panel per configuration;
- grad_norms.png: per-layer gradient norms at each recorded step, at the largest numeric value;
- verdicts.png: each claim's estimate and confidence interval against 0 and its margin, coloured
  by verdict (a forest plot, one panel per claim since their units differ).
"""

import itertools
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path

from cnnlab import dotted
from cnnlab.ablation.aggregate import Axis, config_of, gradient_cells, row_in
from cnnlab.ablation.result import CellResult
from cnnlab.plotting import subplots
from cnnlab.train import names


def _save(fig, path: Path, made: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    made.append(path.name)


def _roles(axes: list[Axis]) -> tuple[Axis | None, list[Axis]]:
    """(axis drawn as lines, axes drawn as panels): the first numeric axis, else the first."""
    line = next((a for a in axes if a.numeric), axes[0] if axes else None)
    return line, [a for a in axes if a is not line]


def _title(panel_axes, combo) -> str:
    return ", ".join(f"{a.name}={v}" for a, v in zip(panel_axes, combo, strict=True)) or "all"


def _series(cells: list[CellResult], split: str, key: str, transform=lambda v: v):
    """Steps, mean and std over the cells (seeds) of one metric of metrics.jsonl."""
    per_step = defaultdict(list)
    for r in cells:
        for m in r.curves:
            if m["split"] == split and key in m:
                per_step[m["step"]].append(transform(m[key]))
    steps = sorted(s for s, v in per_step.items() if len(v) == len(cells))
    mean = [statistics.fmean(per_step[s]) for s in steps]
    std = [statistics.stdev(per_step[s]) if len(cells) > 1 else 0.0 for s in steps]
    return steps, mean, std


def _band(ax, steps, mean, std, **kw):
    (line,) = ax.plot(steps, mean, **kw)
    lo = [m - s for m, s in zip(mean, std, strict=True)]
    hi = [m + s for m, s in zip(mean, std, strict=True)]
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def colours(values) -> dict[str, str]:
    """One colour per value (an axis's values, a grid's side-head taps), the same in every panel
    and figure of a report: by the value's place among them, not the line's order in a panel."""
    return {v: f"C{k % 10}" for k, v in enumerate(values)}


SIDE_COLOURS = {"final": "black"}  # side heads: C0, C1, ... by tap name in sorted order


def _groups(results, axes):
    out = defaultdict(list)
    for r in results:
        if r.done:
            out[config_of(r, axes)].append(r)
    return out


def curves(results, axes, workdir: Path, made: list[str]) -> None:
    line, panels = _roles(axes)
    groups = _groups(results, axes)
    present = {tuple(k[axes.index(a)] for a in panels) for k in groups}  # grids of products
    combos = [c for c in itertools.product(*(a.values for a in panels)) if c in present]
    fig, grid = subplots(
        2, len(combos), figsize=(3.4 * len(combos), 5.6), sharex="col", sharey="row", squeeze=False
    )
    colour = colours(line.values)
    for j, combo in enumerate(combos):
        for v in line.values:
            want = {a.name: x for a, x in zip(panels, combo, strict=True)} | {line.name: v}
            key = tuple(want[a.name] for a in axes)
            for i, split in enumerate(("train", "test")):
                steps, mean, std = _series(groups.get(key, []), split, "accuracy", lambda a: 1 - a)
                if steps:
                    _band(grid[i][j], steps, mean, std, marker="." if split == "test" else None,
                          color=colour[v], label=f"{line.name}={v}")  # fmt: skip
        grid[0][j].set_title(_title(panels, combo), fontsize=9)
        if grid[0][j].lines:
            grid[0][j].legend(fontsize=7)  # every panel names its lines
        grid[1][j].set_xlabel("step")
    grid[0][0].set_ylabel("training error (train mode, per batch)")
    grid[1][0].set_ylabel("test error")
    for ax in grid.flat:
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1)
    fig.suptitle(f"Error against step, one line per {line.name} (band: ± 1 seed-std)", fontsize=10)
    _save(fig, workdir / "curves.png", made)


def versus(rows, axes, workdir: Path, made: list[str], acc: str) -> None:
    line, panels = _roles(axes)
    if line is None or not line.numeric:
        return
    fig, (a1, a2) = subplots(1, 2, figsize=(10, 4))
    for combo in itertools.product(*(a.values for a in panels)):
        rs = [r for r in rows if row_in(r, panels, combo)]
        rs = sorted(rs, key=lambda r: float(r[line.name]))
        if not rs:
            continue
        xs = [float(r[line.name]) for r in rs]
        style = dict(marker="o", capsize=3, label=_title(panels, combo))
        a1.errorbar(xs, [r[f"{acc}_mean"] for r in rs], [r[f"{acc}_std"] for r in rs], **style)
        a2.errorbar(xs, [r["train_loss_mean"] for r in rs], [r["train_loss_std"] for r in rs],
                    **style)  # fmt: skip
    a1.set(xlabel=line.name, ylabel="test accuracy" + (" (PreciseBN)" if "precise" in acc else ""))
    a2.set(xlabel=line.name, ylabel="final train loss (last 10% of steps)", yscale="log")
    for ax in (a1, a2):
        ax.set_xticks(sorted({float(v) for v in line.values}))
        ax.grid(alpha=0.3)
    a1.legend(fontsize=8)
    fig.suptitle(f"Against {line.name}: mean ± seed-std", fontsize=10)
    _save(fig, workdir / f"accuracy_vs_{line.name}.png", made)


def side_heads(results, axes, workdir: Path, made: list[str]) -> None:
    """One panel per configuration with side heads (every side-loss kind): each head's test
    accuracy, the final head's, and, dashed grey, the final head of the same configuration
    without side heads where the grid has it (what the side heads are judged against)."""
    everything = _groups(results, axes)
    groups = {
        k: rs
        for k, rs in everything.items()
        if any(names.side_tap(key) for m in rs[0].curves for key in m)
    }
    if not groups:
        return
    keys = sorted(groups, key=lambda k: tuple(a.position(v) for a, v in zip(axes, k, strict=True)))
    taps_axis = next((i for i, a in enumerate(axes) if a.key == "loss.side_taps"), None)
    # a title names what differs between the panels; a lone panel names its configuration
    varying = [i for i, a in enumerate(axes) if len({k[i] for k in keys}) > 1 or len(keys) == 1]
    ncol = min(3, len(keys))
    nrow = -(-len(keys) // ncol)
    fig, grid = subplots(nrow, ncol, figsize=(max(6.4, 3.8 * ncol), 3.3 * nrow), sharey=True,
                             squeeze=False)  # fmt: skip
    every_tap = sorted({names.side_tap(k) for rs in groups.values() for m in rs[0].curves
                        for k in m if names.side_tap(k)})  # fmt: skip
    tap_colours = colours(every_tap)
    for ax, key in zip(grid.flat, keys, strict=False):
        rs = groups[key]
        taps = sorted({names.side_tap(k) for m in rs[0].curves for k in m if names.side_tap(k)})
        for name, metric in [*((t, names.side(t, "accuracy")) for t in taps),
                             ("final", "accuracy")]:  # fmt: skip
            steps, mean, std = _series(rs, "test", metric)
            if steps:
                _band(ax, steps, mean, std, marker=".", label=name,
                      color=SIDE_COLOURS.get(name) or tap_colours[name])  # fmt: skip
        if taps_axis is not None:
            plain = everything.get((*key[:taps_axis], "none", *key[taps_axis + 1 :]))
            steps, mean, _ = _series(plain or [], "test", "accuracy")
            if steps:
                ax.plot(steps, mean, "--", color="grey", label="final, no side heads")
        title = ", ".join(f"{axes[i].name}={key[i]}" for i in varying) or "all"
        ax.set_title("\n".join(textwrap.wrap(title, 48)), fontsize=8)
        ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in grid.flat[len(keys) :]:
        ax.axis("off")
    grid[0][0].set_ylabel("test accuracy")
    fig.suptitle("Side-head and final-head test accuracy over training (band: ± 1 seed-std)",
                 fontsize=10)  # fmt: skip
    _save(fig, workdir / "side_heads.png", made)


def grad_norms(results, axes, workdir: Path, made: list[str]) -> None:
    where, c, picked = gradient_cells(results, axes)
    steps = sorted({s for r in picked.values() for s in r.grad_norms}, key=int)
    if not steps:
        return
    fig, grid = subplots(1, len(steps), figsize=(5 * len(steps), 3.8), sharey=True,
                             squeeze=False)  # fmt: skip
    colour = colours(c.values) if c is not None else {}
    for ax, step in zip(grid[0], steps, strict=True):
        for v, r in picked.items():
            norms = [x for _, x in r.grad_norms.get(step, [])]
            ax.plot(
                range(len(norms)), norms, marker=".", color=colour.get(v), label=f"{c.name}={v}"
            )
        ax.set(yscale="log", xlabel="layer (input -> classifier)",
               title="at initialisation" if step == "0" else f"at step {step}")  # fmt: skip
        ax.grid(alpha=0.3)
    grid[0][0].set_ylabel("gradient norm per kernel")
    grid[0][0].legend(fontsize=8)
    fig.suptitle(f"Per-layer gradient norms, {where}first seed", fontsize=10)
    _save(fig, workdir / "grad_norms.png", made)


VERDICT_COLOURS = {"held": "tab:green", "negligible": "tab:olive", "contradicted": "tab:red",
                   "inconclusive": "tab:gray"}  # fmt: skip


def verdicts(judged, workdir: Path, made: list[str]) -> None:
    """verdicts.png: one row per claim with an interval (see the module docstring)."""
    judged = [v for v in judged if v.ci.n >= 2]
    if not judged:
        return
    fig, grid = subplots(len(judged), 1, figsize=(8, 1.45 * len(judged) + 0.6), squeeze=False)
    for ax, v in zip(grid[:, 0], judged, strict=True):
        c, ci, m = v.claim, v.ci, v.claim.margin
        colour = VERDICT_COLOURS[v.verdict]
        ax.errorbar([ci.estimate], [0], xerr=[[ci.estimate - ci.low], [ci.high - ci.estimate]],
                    fmt="o", color=colour, capsize=5, lw=2)  # fmt: skip
        ax.axvline(0, color="black", lw=0.8)
        bound = -m if c.rule.non_inferiority else m
        ax.axvline(bound, color="tab:blue", ls="--", lw=1)
        ax.text(bound, 0.55, f" margin {bound:+g}", color="tab:blue", fontsize=7, va="center")
        lo, hi = min(ci.low, 0, bound), max(ci.high, 0, bound)
        pad = 0.08 * (hi - lo or 1)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(-1, 1)
        ax.set_yticks([])
        unit = "test accuracy" if c.rule.metric == "accuracy" else "final train loss"
        sign = " (a - b)" if c.rule.sign < 0 else ""
        what = f"{dotted.short(c.axis)} {c.a} -> {c.b}, {unit}{sign}, n={ci.n}"
        title = textwrap.wrap(f"{c.text}: {v.verdict.upper()}   [{what}]", 110)
        ax.set_title("\n".join(title[:2]), fontsize=8, loc="left", color=colour)
        ax.grid(alpha=0.3, axis="x")
    level = judged[0].ci.level
    fig.suptitle(f"Claims: estimate and {100 * level:g}% CI (paired t) against 0 and the margin",
                 fontsize=10)  # fmt: skip
    _save(fig, workdir / "verdicts.png", made)


def plots(results, rows, axes, workdir: Path, acc: str = "test_acc") -> list[str]:
    """Every figure the grid's axes allow; returns the file names written."""
    made: list[str] = []
    if not any(r.done for r in results) or not axes:
        return made
    curves(results, axes, workdir, made)
    versus(rows, axes, workdir, made, acc)
    side_heads(results, axes, workdir, made)
    grad_norms(results, axes, workdir, made)
    return made
