"""Build every output of a grid from the cell results under WORKDIR/cells: results.csv,
results.md, the figures and report.md (recipe, rules, claims, findings, time)."""

import json
from pathlib import Path

from cnnlab.ablation.aggregate import TIMING, acc_column, aggregate, axes_of, write_tables
from cnnlab.ablation.findings import RULES, findings
from cnnlab.ablation.plots import plots
from cnnlab.ablation.result import CellResult, load_results
from cnnlab.errors import ConfigError


def time_split(results: list[CellResult]) -> list[str]:
    """One line: where the cells' wall time went, summed over the cells run."""
    timed = [r.timing for r in results if r.done and r.timing]
    if not timed:
        return []
    total = {k: sum(t[f"{k}_s"] for t in timed) for k in TIMING}
    parts = ", ".join(
        f"{k} {total[k]:.0f} s ({100 * total[k] / total['wall']:.0f}%)" for k in TIMING[1:]
    )
    return [f"Time: {len(timed)} cells took {total['wall']:.0f} s: {parts}."]


def _recipe(spec: dict) -> str:
    r = spec.get("recipe") or {}
    when = "".join(
        f" Cells with {', '.join(f'{k.rsplit(chr(46), 1)[-1]}={v}' for k, v in cond)} also set "
        f"{', '.join(f'{k}={v}' for k, v in extra)}."
        for cond, extra in spec.get("when", ())
    )
    return (
        f"Recipe (every cell): {r['dataset']}, {r['steps']} steps of batch {r['batch_size']}, "
        f"{r['optimizer']} peak lr {r['peak_lr']:.4g}, {r['schedule']} schedule after "
        f"{r['warmup_steps']} warm-up steps, weight decay {r['weight_decay']:g}, "
        f"zero_init_residual {'on' if r['zero_init_residual'] else 'off'}; test accuracy "
        + (
            f"with BN statistics recomputed over {r['train_subset']} training images (PreciseBN)."
            if r["precise_bn"]
            else "with running BN statistics."
        )
        + when
    )


def write_report(workdir: Path, title: str = "Ablation report") -> dict:
    """(Re)build every output from the cell results found under workdir/cells."""
    workdir = Path(workdir)
    results = load_results(workdir)
    if not results:
        raise ConfigError(
            f"no cell results under {workdir / 'cells'}; run the grid first (without "
            f"--report_only) or point --workdir at a grid's directory"
        )
    spec_path = workdir / "grid.json"
    spec = json.loads(spec_path.read_text()) if spec_path.exists() else {}
    axes = axes_of(results, spec)
    rows = aggregate(results, spec)
    write_tables(rows, axes, workdir)
    acc = acc_column(rows)
    made = plots(results, rows, axes, workdir, acc)
    f = findings(results, rows, axes, spec)
    seeds = sorted({str(r.overrides.get("seed", 0)) for r in results})
    section = lambda name, items: (
        [f"## {name}", "", *[f"- {x}" for x in items], ""] if items else []
    )
    lines = [
        f"# {title}",
        "",
        f"{len(results)} cells, {len(rows)} configurations x seeds {', '.join(seeds)} "
        f"(mean ± sample std over seeds). Table: [results.md](results.md), data: results.csv.",
        "",
        *([_recipe(spec), ""] if spec.get("recipe") else []),
        RULES,
        "",
        *section("Claims", f["claims"]),
        *section("Along numeric axes", f["trends"]),
        *section("Paired effects", f["effects"]),
        *section("Gradients and activations", f["gradients"]),
        *section("Notes", f["notes"] + time_split(results)),
        "## Figures",
        "",
        *[f"![{m}]({m})" for m in made],
        "",
        "## Results",
        "",
        (workdir / "results.md").read_text(),
    ]
    (workdir / "report.md").write_text("\n".join(lines))
    return {"rows": rows, "plots": made, "findings": f}
