"""Aggregate cell results into results.csv / results.md, PNG plots and report.md with findings."""

import csv
import io
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from cnnlab.ablation.grid import label

SEED = "seed"
# a cell's wall time, split (seconds, mean over seeds): see TrainResult.timing
TIMING = ("wall", "compile", "data", "compute", "eval", "checkpoint", "other")


def load_results(workdir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(workdir).glob("cells/*/result.json"))]


def _config_key(r) -> tuple:
    return tuple((k, label(v)) for k, v in r["overrides"].items() if k != SEED)


def mean_std(values) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: list[dict]) -> list[dict]:
    """One row per configuration (all axes but the seed): mean ± std over seeds."""
    groups = defaultdict(list)
    for r in results:
        groups[_config_key(r)].append(r)
    rows = []
    for key, rs in groups.items():
        done = [r for r in rs if r["status"] == "done"]
        acc = mean_std([r["metrics"]["accuracy"] for r in done])
        loss = mean_std([r["metrics"]["loss"] for r in done])
        row = {k.rsplit(".", 1)[-1]: v for k, v in key}
        side = sorted(
            {
                k
                for r in done
                for k in r["metrics"]
                if k.startswith("side/") and k.endswith("/accuracy")
            }
        )
        row.update(
            seeds=len(rs),
            failed=len(rs) - len(done),
            test_acc_mean=acc[0],
            test_acc_std=acc[1],
            test_loss_mean=loss[0],
            test_loss_std=loss[1],
            params=done[0]["params"] if done else None,
            macs=done[0]["macs"] if done else None,
            step_ms=mean_std([1e3 * r["step_s"] for r in done if r.get("step_s")])[0],
            first_step_s=mean_std([r["first_step_s"] for r in done if r.get("first_step_s")])[0],
            **{
                f"{k}_s": mean_std([r["timing"][f"{k}_s"] for r in done if "timing" in r])[0]
                for k in TIMING
            },
        )
        for s in side:
            row[s.replace("/accuracy", "_acc").replace("side/", "side_")] = mean_std(
                [r["metrics"].get(s) for r in done]
            )[0]
        rows.append(row)
    return rows


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def write_tables(rows: list[dict], workdir: Path) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    (workdir / "results.csv").write_text(buf.getvalue())
    axes = [f for f in fields if f not in _METRIC_FIELDS and not f.startswith("side_")]
    head = [*axes, "test acc (mean ± std)", "test loss", "params", "MACs", "step ms"]
    head += [f"{k} s" for k in TIMING] + ["seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        acc = f"{r['test_acc_mean']:.4f} ± {r['test_acc_std']:.4f}"
        cells = [_fmt(r.get(a)) for a in axes] + [
            acc,
            _fmt(r["test_loss_mean"]),
            _fmt(r["params"]),
            _fmt(r["macs"]),
            _fmt(r["step_ms"]),
            *(_fmt(r.get(f"{k}_s")) for k in TIMING),
            f"{r['seeds'] - r['failed']}/{r['seeds']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    (workdir / "results.md").write_text("\n".join(lines) + "\n")


_METRIC_FIELDS = {
    "seeds",
    "failed",
    "test_acc_mean",
    "test_acc_std",
    "test_loss_mean",
    "test_loss_std",
    "params",
    "macs",
    "step_ms",
    "first_step_s",
    *(f"{k}_s" for k in ("compile", "data", "compute", "eval", "checkpoint", "other", "wall")),
}


def _curve(result, split="train", key="loss"):
    return [(m["step"], m[key]) for m in result.get("curves", []) if m["split"] == split]


def _config_label(result) -> str:
    """'depth=56, skip=False, side_taps=none': a cell's overrides without the seed."""
    return ", ".join(
        f"{k.rsplit('.', 1)[-1]}={label(v)}" for k, v in result["overrides"].items() if k != SEED
    )


def _side_acc_keys(row) -> list[str]:
    """'side_<tap>_acc' columns with a value (not the 'side_taps' axis), in tap order."""
    return sorted(
        k
        for k in row
        if k.startswith("side_")
        and k.endswith("_acc")
        and row[k] is not None
        and not math.isnan(row[k])
    )


def _finish(fig, ax, path: Path, made: list[str], legend_size: int = 7) -> None:
    import matplotlib.pyplot as plt

    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    made.append(path.name)


def plots(results: list[dict], rows: list[dict], workdir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    done = [r for r in results if r["status"] == "done"]
    if any("depth" in r for r in rows):  # accuracy vs depth, skip on/off (and aux on/off)
        fig, ax = plt.subplots(figsize=(6, 4))
        series = defaultdict(list)
        for r in rows:
            series[(r.get("skip"), r.get("side_taps"))].append(r)
        for (skip, taps), rs in sorted(series.items(), key=str):
            rs = sorted(rs, key=lambda r: int(r["depth"]))
            ax.errorbar(
                [int(r["depth"]) for r in rs],
                [r["test_acc_mean"] for r in rs],
                yerr=[r["test_acc_std"] for r in rs],
                marker="o",
                capsize=3,
                linestyle="-" if taps in (None, "none") else "--",
                label=f"skip={skip}, side={taps}",
            )
        ax.set(xlabel="depth", ylabel="final test accuracy", title="Accuracy vs depth")
        _finish(fig, ax, workdir / "accuracy_vs_depth.png", made, 7)
    if done:  # training loss curves, mean over seeds
        fig, ax = plt.subplots(figsize=(7, 4))
        groups = defaultdict(list)
        for r in done:
            groups[_config_label(r)].append(r)
        for name, rs in sorted(groups.items()):
            curves = [_curve(r) for r in rs]
            steps = [s for s, _ in curves[0]]
            mean = [
                statistics.fmean(c[i][1] for c in curves if i < len(c)) for i in range(len(steps))
            ]
            ax.plot(steps, mean, label=name)
        ax.set(xlabel="step", ylabel="train loss (final head)", yscale="log", title="Training loss")
        _finish(fig, ax, workdir / "loss_curves.png", made, 6)
    with_grads = [r for r in done if r.get("grad_norms")]
    if with_grads:  # gradient norm per layer at initialisation, deepest nets, plain vs residual
        depth = max(int(r["overrides"].get("model.kwargs.depth", 0)) for r in with_grads)
        fig, ax = plt.subplots(figsize=(7, 4))
        for r in with_grads:
            ov = r["overrides"]
            if int(ov.get("model.kwargs.depth", 0)) != depth or ov.get(SEED, 0) not in (0, None):
                continue
            norms = r["grad_norms"][min(r["grad_norms"], key=int)]
            ax.plot(range(len(norms)), [n for _, n in norms], label=_config_label(r))
        ax.set(
            xlabel="layer index (input -> output)",
            ylabel="gradient norm at init",
            yscale="log",
            title=f"Per-layer gradient norms, depth {depth}",
        )
        _finish(fig, ax, workdir / "grad_norms.png", made, 6)
    side_rows = [r for r in rows if _side_acc_keys(r)]  # configs that had side heads
    if side_rows:  # side-head accuracy vs tap depth
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in side_rows:
            taps = _side_acc_keys(r)
            xs = [t[len("side_") : -len("_acc")] for t in taps] + ["final"]
            ax.plot(
                xs,
                [r[t] for t in taps] + [r["test_acc_mean"]],
                marker="o",
                label=f"depth={r.get('depth')}, skip={r.get('skip')}",
            )
        ax.set(xlabel="head (tap)", ylabel="test accuracy", title="Side-head accuracy by tap")
        _finish(fig, ax, workdir / "side_heads.png", made, 7)
    return made


def _pick(rows, **where):
    return [r for r in rows if all(str(r.get(k)) == str(v) for k, v in where.items())]


def _final_train_loss(results, overrides_match) -> float:
    vals = []
    for r in results:
        if r["status"] != "done":
            continue
        ov = {k.rsplit(".", 1)[-1]: label(v) for k, v in r["overrides"].items()}
        if all(str(ov.get(k)) == str(v) for k, v in overrides_match.items()):
            curve = _curve(r)
            if curve:
                vals.append(statistics.fmean(v for _, v in curve[-3:]))
    return mean_std(vals)[0]


def findings(rows: list[dict], results: list[dict]) -> list[str]:
    """Statements in numbers about the axes present: depth x skip, side heads, gradients."""
    out = []
    no_aux = {"side_taps": "none"} if any("side_taps" in r for r in rows) else {}
    depths = sorted({int(r["depth"]) for r in rows if "depth" in r})
    if len(depths) >= 2 and any("skip" in r for r in rows):
        lo, hi = depths[0], depths[-1]
        verdict = {}
        for skip in ("False", "True"):
            a = _pick(rows, depth=lo, skip=skip, **no_aux)
            b = _pick(rows, depth=hi, skip=skip, **no_aux)
            if not (a and b):
                continue
            a, b = a[0], b[0]
            tl_a = _final_train_loss(results, {"depth": lo, "skip": skip, **no_aux})
            tl_b = _final_train_loss(results, {"depth": hi, "skip": skip, **no_aux})
            delta = b["test_acc_mean"] - a["test_acc_mean"]
            worse = delta < -max(a["test_acc_std"], b["test_acc_std"], 0.005)
            verdict[skip] = worse
            kind = "Plain" if skip == "False" else "Residual"
            out.append(
                f"{kind} nets: depth {lo} -> test accuracy {a['test_acc_mean']:.4f} ± "
                f"{a['test_acc_std']:.4f}, final train loss {tl_a:.4f}; depth {hi} -> "
                f"{b['test_acc_mean']:.4f} ± {b['test_acc_std']:.4f}, train loss {tl_b:.4f} "
                f"(accuracy change {delta:+.4f}; {'worse' if worse else 'not worse'} beyond "
                f"the seed spread)."
            )
        if "False" in verdict and "True" in verdict:
            seen = verdict["False"] and not verdict["True"]
            out.append(
                f"Degradation (ResNet paper, section 4.1): the deepest plain net "
                f"{'trains worse' if verdict['False'] else 'does not train worse'} than the "
                f"shallow plain one, and the residual one "
                f"{'also degrades' if verdict['True'] else 'does not'}: the effect is "
                f"{'reproduced' if seen else 'not reproduced'} in this grid."
            )
    if len(depths) >= 1 and any("skip" in r for r in rows):
        gaps = []
        for d in depths:
            res, plain = (
                _pick(rows, depth=d, skip="True", **no_aux),
                _pick(rows, depth=d, skip="False", **no_aux),
            )
            if res and plain:
                gaps.append(
                    f"depth {d}: {res[0]['test_acc_mean'] - plain[0]['test_acc_mean']:+.4f}"
                )
        if gaps:
            out.append(
                "Skip connection effect (residual minus plain test accuracy): "
                + "; ".join(gaps)
                + "."
            )
    if any("side_taps" in r for r in rows):
        diffs = []
        for r in rows:
            if r.get("side_taps") == "none":
                continue
            match = {k: r[k] for k in r if k not in _METRIC_FIELDS and not k.startswith("side_")}
            base = _pick(rows, **{**match, "side_taps": "none"})
            if base:
                diffs.append((r, r["test_acc_mean"] - base[0]["test_acc_mean"]))
        if diffs:
            parts = [f"depth={r.get('depth')} skip={r.get('skip')}: {d:+.4f}" for r, d in diffs]
            mean = statistics.fmean(d for _, d in diffs)
            out.append(
                f"Auxiliary (side-head) losses changed final test accuracy by {mean:+.4f} on "
                f"average ({'; '.join(parts)})."
            )
    grads = [r for r in results if r["status"] == "done" and r.get("grad_norms")]
    if grads and depths:
        for r in grads:
            ov = r["overrides"]
            if int(ov.get("model.kwargs.depth", -1)) != depths[-1] or ov.get(SEED, 0) != 0:
                continue
            if ov.get("loss.side_taps") not in ((), [], None):
                continue
            norms = [n for _, n in r["grad_norms"][min(r["grad_norms"], key=int)]]
            spread = max(norms) / min(norms) if min(norms) > 0 else math.inf
            out.append(
                f"Per-layer gradient norms at initialisation, depth {depths[-1]} "
                f"skip={ov.get('model.kwargs.skip')}: {min(norms):.3g} to {max(norms):.3g} "
                f"({spread:.3g}x spread over {len(norms)} kernels; largest at layer "
                f"{norms.index(max(norms))} of {len(norms)}, counted from the input)."
            )
            sp = r.get("sparsity") or {}
            if len(sp) >= 3:
                v = list(sp.values())
                third = max(1, len(v) // 3)
                out.append(
                    f"Activation sparsity (zero ReLU outputs), depth {depths[-1]} "
                    f"skip={ov.get('model.kwargs.skip')}: first third of blocks "
                    f"{statistics.fmean(v[:third]):.3f}, "
                    f"last third {statistics.fmean(v[-third:]):.3f}."
                )
    failed = [r for r in results if r["status"] != "done"]
    if failed:
        out.append(
            f"{len(failed)} cell(s) failed: "
            + "; ".join(f"{r['name']}: {r.get('reason', '?')}" for r in failed[:5])
        )
    return out


def time_split(results: list[dict]) -> list[str]:
    """One line: where the cells' wall time went, summed over the cells run."""
    timed = [r["timing"] for r in results if r.get("status") == "done" and "timing" in r]
    if not timed:
        return []
    total = {k: sum(t[f"{k}_s"] for t in timed) for k in TIMING}
    parts = ", ".join(
        f"{k} {total[k]:.0f} s ({100 * total[k] / total['wall']:.0f}%)" for k in TIMING[1:]
    )
    return [f"- Time: {len(timed)} cells took {total['wall']:.0f} s: {parts}."]


def write_report(workdir: Path, title: str = "Ablation report") -> dict:
    """(Re)build every output from the cell results found under workdir/cells."""
    workdir = Path(workdir)
    results = load_results(workdir)
    if not results:
        raise ValueError(f"no cell results under {workdir / 'cells'}; run the grid first")
    rows = aggregate(results)
    write_tables(rows, workdir)
    made = plots(results, rows, workdir)
    lines = [
        f"# {title}",
        "",
        f"{len(results)} cells, {len(rows)} configurations "
        f"(mean ± std over seeds). Table: [results.md](results.md), data: results.csv.",
        "",
        "## Findings",
        "",
        *[f"- {f}" for f in findings(rows, results)],
        *time_split(results),
        "",
        "## Plots",
        "",
        *[f"![{m}]({m})" for m in made],
        "",
        "## Results",
        "",
        (workdir / "results.md").read_text(),
    ]
    (workdir / "report.md").write_text("\n".join(lines))
    return {"rows": rows, "plots": made}
