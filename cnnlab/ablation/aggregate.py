"""Cell results -> one row per configuration (every grid axis but the seed): mean ± std over
seeds, paired gains against each categorical axis's baseline; results.csv and results.md."""

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

from cnnlab import dotted
from cnnlab.ablation.grid import label
from cnnlab.ablation.result import CellResult
from cnnlab.records import write_text_atomic
from cnnlab.stats import mean_std, paired
from cnnlab.train import names
from cnnlab.train.names import TIMING_KEYS

SEED = "seed"
# a cell's wall time, split (seconds, mean over seeds): see TrainResult.timing
TIMING = ("wall", *(k.removesuffix("_s") for k in TIMING_KEYS), "other")


class Axis:
    """A grid axis: dotted key, short name (last component), value labels in grid order.

    Numeric axes (depth, width, lr) are ordered: findings compare their ends. The others are
    categorical, and their first value is the baseline that paired gains are measured from."""

    def __init__(self, key: str, values: list[str]):
        self.key, self.name = key, dotted.short(key)
        self.values = [v if isinstance(v, str) else label(v) for v in values]
        self.numeric = len(values) > 1 and all(_is_number(v) for v in values)
        if self.numeric:
            self.values.sort(key=float)

    @property
    def baseline(self) -> str:
        return self.values[0]

    def position(self, value: str) -> float:
        return float(value) if self.numeric else self.values.index(value)


def _is_number(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return v not in ("True", "False")


def axes_of(results: list[CellResult], spec: dict | None = None) -> list[Axis]:
    """The grid's axes but the seed, from grid.json's spec or else from the results."""
    if spec and spec.get("axes"):
        return [Axis(k, v) for k, v in spec["axes"] if k != SEED]
    values = defaultdict(dict)  # first-seen order
    for r in results:
        for k, v in r.overrides.items():
            if k != SEED:
                values[k][label(v)] = None
    return [Axis(k, list(v)) for k, v in values.items()]


def config_of(r: CellResult, axes: list[Axis]) -> tuple[str, ...]:
    return tuple(label(r.overrides.get(a.key)) for a in axes)


def verdict_acc(r: CellResult) -> float:
    """The test accuracy verdicts use: with PreciseBN statistics when the run recorded them."""
    return r.metrics.get(names.PRECISE_BN + "accuracy", r.metrics.get("accuracy", math.nan))


def acc_column(rows: list[dict]) -> str:
    """The rows' verdict accuracy column: PreciseBN's when the runs recorded it."""
    return (
        "test_acc_precise_bn" if any("test_acc_precise_bn_mean" in r for r in rows) else "test_acc"
    )


def gain_name(axis: Axis, axes: list[Axis]) -> str:
    """'side' for side_taps, 'skip' for skip: the first word, unless another axis shares it."""
    short = axis.name.split("_")[0]
    clash = sum(a.name.split("_")[0] == short for a in axes) > 1
    return f"{axis.name if clash else short}_gain"


def aggregate(results: list[CellResult], spec: dict | None = None) -> list[dict]:
    """One row per configuration: axis columns, then mean ± std over seeds of every metric."""
    axes = axes_of(results, spec)
    precise = any(names.PRECISE_BN + "accuracy" in r.metrics for r in results if r.done)
    groups = defaultdict(list)
    for r in results:
        groups[config_of(r, axes)].append(r)
    rows = []
    for key, rs in groups.items():
        done = [r for r in rs if r.done]
        row = {a.name: v for a, v in zip(axes, key, strict=True)}
        row.update(seeds=len(rs), failed=len(rs) - len(done))
        put = lambda name, values, row=row: row.update(
            zip((f"{name}_mean", f"{name}_std"), mean_std(values), strict=True)
        )
        put("test_acc", [r.metrics.get("accuracy") for r in done])
        put("test_loss", [r.metrics.get("loss") for r in done])
        put("train_loss", [r.train_loss for r in done])
        put("train_acc", [r.metrics.get(names.TRAIN_SUBSET + "accuracy") for r in done])
        if precise:  # on every row, nan where no cell finished
            precise_acc = names.PRECISE_BN + "accuracy"
            subset_acc = names.PRECISE_BN + names.TRAIN_SUBSET + "accuracy"
            put("test_acc_precise_bn", [r.metrics.get(precise_acc) for r in done])
            put("train_acc_precise_bn", [r.metrics.get(subset_acc) for r in done])
        row.update(
            params=done[0].params if done else None,
            macs=done[0].macs if done else None,
            step_ms=mean_std([1e3 * r.step_s for r in done if r.step_s])[0],
            first_step_s=mean_std([r.first_step_s for r in done if r.first_step_s])[0],
            **{
                f"{k}_s": mean_std([r.timing[f"{k}_s"] for r in done if r.timing])[0]
                for k in TIMING
            },
        )
        taps = sorted({k for r in done for k in r.metrics if _is_side_acc(k)})
        for k in taps:  # side/<tap>/accuracy -> side_<tap>_acc
            row[f"side_{names.side_tap(k)}_acc"] = mean_std([r.metrics.get(k) for r in done])[0]
        rows.append(row)
    _add_gains(rows, results, axes)
    return sort_rows(rows, axes)


def _is_side_acc(key: str) -> bool:
    return names.side_tap(key) is not None and key.endswith("/accuracy")


def by_seed(results: list[CellResult], axes: list[Axis], metric=verdict_acc) -> dict[tuple, dict]:
    """{configuration: {seed: metric(cell)}} over finished cells (default: verdict accuracy)."""
    out = defaultdict(dict)
    for r in results:
        if r.done:
            value = metric(r)
            out[config_of(r, axes)][label(r.overrides.get(SEED, 0))] = (
                math.nan if value is None else value
            )
    return out


def _add_gains(rows: list[dict], results: list[CellResult], axes: list[Axis]) -> None:
    """On rows with a non-baseline value of a categorical axis: the paired (same seed)
    differences of verdict accuracy against the same configuration at the baseline value."""
    accs = by_seed(results, axes)
    for row in rows:
        key = tuple(row[a.name] for a in axes)
        for i, a in enumerate(axes):
            if a.numeric or row[a.name] == a.baseline:
                continue
            base = (*key[:i], a.baseline, *key[i + 1 :])
            if base in accs and key in accs:
                p = paired(accs[base], accs[key])
                name = gain_name(a, axes)
                row[f"{name}_mean"], row[f"{name}_std"] = p.mean, p.std


def row_in(row: dict, axes: list[Axis], values) -> bool:
    """Whether a results row has these values on these axes."""
    return all(row[a.name] == v for a, v in zip(axes, values, strict=True))


def sort_rows(rows: list[dict], axes: list[Axis]) -> list[dict]:
    """Numerically along numeric axes, in grid order along the others."""
    return sorted(rows, key=lambda r: tuple(a.position(r[a.name]) for a in axes))


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def _pm(row, name) -> str:
    m, s = row.get(f"{name}_mean"), row.get(f"{name}_std")
    return "" if m is None or math.isnan(m) else f"{m:.4f} ± {s:.4f}"


def write_tables(rows: list[dict], axes: list[Axis], workdir: Path) -> None:
    """results.csv (every column) and results.md (the columns a reader compares)."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    write_text_atomic(workdir / "results.csv", buf.getvalue())
    stats = [("test_acc", "test acc")]
    if acc_column(rows) == "test_acc_precise_bn":
        stats.append(("test_acc_precise_bn", "test acc, PreciseBN"))
    stats += [("train_loss", "final train loss"), ("train_acc", "train acc (eval mode)")]
    gains = [g[: -len("_mean")] for g in fields if g.endswith("_gain_mean")]
    head = [a.name for a in axes] + [h for _, h in stats] + [g.replace("_", " ") for g in gains]
    head += ["params", "MACs", "step ms", "wall s", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r[a.name] for a in axes] + [_pm(r, s) for s, _ in stats]
        cells += [_pm(r, g) for g in gains]
        cells += [_fmt(r["params"]), _fmt(r["macs"]), _fmt(r["step_ms"]), _fmt(r["wall_s"])]
        cells.append(f"{r['seeds'] - r['failed']}/{r['seeds']}")
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomic(workdir / "results.md", "\n".join(lines) + "\n")


def gradient_cells(results: list[CellResult], axes: list[Axis]):
    """The cells whose gradients the report shows: at the largest value of the first numeric
    axis at which such cells finished (a diverged lr=1e30 falls back to the next value), the
    other categorical axes at baseline, first seed, one per value of the first categorical axis
    that varies (e.g. skip: plain vs residual).

    -> (label like 'depth=56 ', that axis or None, {value: cell}).
    """
    numeric = [a for a in axes if a.numeric]
    cats = [a for a in axes if not a.numeric]
    if not cats:
        return "", None, {}
    n = (numeric or [None])[0]
    c = next((a for a in cats if len(a.values) > 1), cats[0])
    for at in reversed(n.values) if n else [None]:
        picked = {}
        for v in c.values:
            want = {a.key: a.baseline for a in cats} | ({n.key: at} if n else {}) | {c.key: v}
            cells = [r for r in results if r.done and r.grad_norms
                     and all(label(r.overrides.get(k)) == x for k, x in want.items())]  # fmt: skip
            if cells:
                picked[v] = min(cells, key=lambda r: str(r.overrides.get(SEED, 0)))
        if picked:
            return (f"{n.name}={at} " if n else ""), c, picked
    return "", c, {}
