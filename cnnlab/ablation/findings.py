"""Findings in numbers, by stated rules, over whatever axes a grid names.

Numeric axes (depth, width, ...) are judged end to end, per configuration of the other axes:
  - "degrades": the final training loss at the axis's largest value exceeds the smallest's by
    more than 2 seed-std (the larger std of the two), the ResNet paper's measure of degradation;
  - "does not degrade": test accuracy at the largest value is within max(2 seed-std, 0.02) of
    the smallest's, or above it.
Categorical axes (skip, side_taps, conv, ...) are judged against their first grid value, paired
by seed: "helps" when the mean paired difference in test accuracy exceeds 2 standard errors
(2·std/√seeds), "hurts" below -2 SE, else "no effect beyond 2 SE".
Test accuracy is PreciseBN's when the runs recorded it. A grid config may list `claims`
((text, rule, axis key, ((key, value), ...)), ...) to be judged by these rules.
"""

import dataclasses
import itertools
import statistics

from cnnlab.ablation.aggregate import (
    SEED,
    Axis,
    acc_column,
    by_seed,
    gradient_cells,
    row_in,
    sort_rows,
)
from cnnlab.ablation.grid import label
from cnnlab.ablation.result import CellResult
from cnnlab.stats import paired

RULES = (
    "Rules: along a numeric axis, *degrades* = final train loss (mean of the last 10% of steps) "
    "at its largest value above the smallest's by > 2 seed-std; *does not degrade* = test "
    "accuracy at the largest value within max(2 seed-std, 0.02) of the smallest's, or above. "
    "Against a categorical axis's first value, paired by seed: *helps* = mean difference in "
    "test accuracy > 2 SE (2·std/√seeds), *hurts* < -2 SE, else no effect beyond 2 SE."
)


@dataclasses.dataclass
class Finding:
    """One judged comparison: which axis, in which configuration of the others, the verdicts
    it earned (any of 'degrades', 'does_not_degrade', 'helps', 'hurts') and the sentence."""

    axis: str  # dotted key
    where: dict  # dotted key -> value label, the other axes
    verdicts: set
    text: str

    def matches(self, where: dict) -> bool:
        return all(self.where.get(k) == label(v) for k, v in where.items())


def _group_label(where: dict) -> str:
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in where.items()) or "all cells"


def _seeds_where(a: dict, b: dict, better) -> str:
    """'k of n seeds' for which better(a[seed], b[seed]) holds, over the seeds both have."""
    seeds = [k for k in a if k in b]
    return f"{sum(better(a[k], b[k]) for k in seeds)} of {len(seeds)} seeds"


def trend_findings(
    rows: list[dict], axes: list[Axis], results: list[CellResult] = ()
) -> list[Finding]:
    out, acc = [], acc_column(rows)
    losses = by_seed(results, axes, lambda r: r.train_loss)
    accs = by_seed(results, axes)
    for a in (a for a in axes if a.numeric):
        others = [b for b in axes if b is not a]
        for combo in itertools.product(*(b.values for b in others)):
            where = {b.key: v for b, v in zip(others, combo, strict=True)}
            ends = [
                next((r for r in rows if r[a.name] == v and row_in(r, others, combo)), None)
                for v in (a.values[0], a.values[-1])
            ]
            if None in ends:
                continue
            lo, hi = ends
            key = lambda row: tuple(row[b.name] for b in axes)
            up = _seeds_where(losses[key(lo)], losses[key(hi)], lambda x, y: y > x)
            down = _seeds_where(accs[key(lo)], accs[key(hi)], lambda x, y: y < x)
            dl = hi["train_loss_mean"] - lo["train_loss_mean"]
            loss_bar = 2 * max(lo["train_loss_std"], hi["train_loss_std"])
            da = hi[f"{acc}_mean"] - lo[f"{acc}_mean"]
            tol = max(2 * max(lo[f"{acc}_std"], hi[f"{acc}_std"]), 0.02)
            verdicts = set()
            if dl > loss_bar:
                verdicts.add("degrades")
            if da >= -tol:
                verdicts.add("does_not_degrade")
            text = (
                f"{_group_label(where)}: {a.name} {lo[a.name]} -> {hi[a.name]}: final train loss "
                f"{lo['train_loss_mean']:.3f} ± {lo['train_loss_std']:.3f} -> "
                f"{hi['train_loss_mean']:.3f} ± {hi['train_loss_std']:.3f} ({dl:+.3f}; "
                f"2 seed-std {loss_bar:.3f}: {'degrades' if dl > loss_bar else 'no degradation'}"
                f"; higher on {up}); test acc {lo[f'{acc}_mean']:.3f} ± {lo[f'{acc}_std']:.3f} "
                f"-> {hi[f'{acc}_mean']:.3f} ± {hi[f'{acc}_std']:.3f} ({da:+.3f}; tolerance "
                f"{tol:.3f}: {'does not degrade' if da >= -tol else 'drops'}; lower on {down})."
            )
            out.append(Finding(a.key, where, verdicts, text))
    return out


def paired_findings(results: list[CellResult], axes: list[Axis]) -> list[Finding]:
    out, accs = [], by_seed(results, axes)
    for i, a in enumerate(axes):
        if a.numeric:
            continue
        others = [b for b in axes if b is not a]
        for v in a.values[1:]:
            for combo in itertools.product(*(b.values for b in others)):
                key = (*combo[:i], v, *combo[i:])
                base = (*combo[:i], a.baseline, *combo[i:])
                if key not in accs or base not in accs:
                    continue
                p = paired(accs[base], accs[key])
                if not p.n:
                    continue
                bar = 2 * p.se
                verdict = "helps" if p.mean > bar else "hurts" if p.mean < -bar else None
                where = {b.key: c for b, c in zip(others, combo, strict=True)}
                out.append(
                    Finding(
                        a.key,
                        where,
                        {verdict} if verdict else set(),
                        f"{_group_label(where)}: {a.name} {a.baseline} -> {v}: test acc "
                        f"{p.mean:+.3f} ± {p.std:.3f} over {p.n} paired seeds (2 SE {bar:.3f}; "
                        f"higher on {_seeds_where(accs[base], accs[key], lambda x, y: y > x)}): "
                        f"{verdict or 'no effect beyond 2 SE'}.",
                    )
                )
    return out


def judge_claims(claims, found: list[Finding]) -> list[str]:
    """'held' / 'held in k of m' / 'did not hold' for each (text, rule, axis key, where)."""
    out = []
    for text, rule, axis, where in claims:
        where = dict(where)
        hits = [f for f in found if f.axis == axis and f.matches(where)]
        if not hits:
            out.append(f"**{text}**: not tested (no cells match {_group_label(where)}).")
            continue
        held = [f for f in hits if rule in f.verdicts]
        verdict = (
            "held"
            if len(held) == len(hits)
            else f"held in {len(held)} of {len(hits)}"
            if held
            else "did not hold"
        )
        rule_name = rule.replace("_", " ")
        lines = " ".join(f"[{'yes' if f in held else 'no'}] {f.text}" for f in hits)
        out.append(f"**{text}** (rule: {rule_name}): {verdict}. {lines}")
    return out


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


def findings(
    results: list[CellResult], rows: list[dict], axes: list[Axis], spec: dict | None = None
) -> dict[str, list[str]]:
    """Sections of the report: claims, trends, paired effects, gradients, notes."""
    spec = spec or {}
    rows = sort_rows(rows, axes)
    trends, effects = trend_findings(rows, axes, results), paired_findings(results, axes)
    failed = [r for r in results if not r.done]
    notes = twins_note(rows, axes, spec.get("recipe", {}))
    if failed:
        notes.append(
            f"{len(failed)} cell(s) failed: "
            + "; ".join(f"{r.name}: {r.reason or '?'}" for r in failed[:5])
        )
    return {
        "claims": judge_claims(spec.get("claims", ()), trends + effects),
        "trends": [f.text for f in trends],
        "effects": [f.text for f in effects],
        "gradients": gradient_findings(results, axes),
        "notes": notes,
    }
