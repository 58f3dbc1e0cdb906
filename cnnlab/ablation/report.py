"""Build every output of a grid from the cell results under WORKDIR/cells: results.csv,
results.md, the figures and report.md (recipe, rules, claims, findings, time)."""

import json
from pathlib import Path

from cnnlab import dotted, provenance
from cnnlab.ablation.aggregate import TIMING, acc_column, aggregate, axes_of, write_tables
from cnnlab.ablation.findings import findings
from cnnlab.ablation.grid import cell_name
from cnnlab.ablation.plots import plots, verdicts
from cnnlab.ablation.result import CellResult, load_results
from cnnlab.ablation.two_stage import load_plan
from cnnlab.errors import ConfigError
from cnnlab.records import write_json_atomic, write_text_atomic
from cnnlab.train.loop import warn


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
    """The recipe shared by every cell; a part a grid axis sets names the axis instead of the
    base config's value (the table has the cells' values)."""
    r = spec.get("recipe") or {}
    axes = {key for key, _ in spec.get("axes", ())}

    def part(text: str, *keys: str) -> str:
        varied = [k for k in keys if k in axes]
        return f"{dotted.short(varied[0])} per cell (a grid axis)" if varied else text

    when = "".join(
        f" Cells with {', '.join(f'{dotted.short(k)}={v}' for k, v in cond)} also set "
        f"{', '.join(f'{k}={v}' for k, v in extra)}."
        for cond, extra in spec.get("when", ())
    )
    lr, decay = f"peak lr {r['peak_lr']:.4g}", f"weight decay {r['weight_decay']:g}"
    return (
        f"Recipe (every cell): {part(r['dataset'], 'data.name')}, "
        f"{part(f'{r["steps"]} steps', 'train.steps')} of "
        f"{part(f'batch {r["batch_size"]}', 'data.batch_size')}, "
        f"{part(r['optimizer'], 'optim.optimizer')} {part(lr, 'optim.lr', 'optim.lr_batch')}, "
        f"{part(r['schedule'] + ' schedule', 'optim.schedule')} after "
        f"{part(f'{r["warmup_steps"]} warm-up steps', 'optim.warmup_steps')}, "
        f"{part(decay, 'optim.weight_decay')}, "
        f"zero_init_residual {'on' if r['zero_init_residual'] else 'off'}; test accuracy "
        + (
            f"with BN statistics recomputed over {r['train_subset']} training images (PreciseBN)."
            if r["precise_bn"]
            else "with running BN statistics."
        )
        + when
    )


def _seed_order(s: str):
    return (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s)


def _plan_lines(plan: dict | None, results: list[CellResult]) -> list[str]:
    """What the two-stage plan did for each claim, and whether its cells have finished."""
    if plan is None:
        return []
    out = [
        f"{n['claim']}: pilot ({n['pilot_seeds']} seeds) {n['pilot_verdict']}; {n['why']}."
        for n in plan["claims"]
    ]
    names = {r.name for r in results if r.done}
    planned = [cell_name(o) for o in plan["cells"]]
    left = [n for n in planned if n not in names]
    status = f"{len(left)} not finished: verdicts use the seeds that have" if left else "done"
    out.append(f"{len(planned)} cells added (estimated {plan['estimated_s']:.0f} s), {status}.")
    return out


def _reused(results: list[CellResult]) -> list[str]:
    """Cells that reused an identical cell's result (cnnlab.ablation.duplicates)."""
    reused = [r for r in results if r.same_as]
    if not reused:
        return []
    pairs = "; ".join(f"{r.name} = {r.same_as}" for r in reused[:3])
    more = f" and {len(reused) - 3} more" if len(reused) > 3 else ""
    return [
        f"{len(reused)} cell(s) would have trained exactly as another cell (the settings that "
        f"tell them apart change nothing there), so they reuse its result and any comparison "
        f"between the two is zero by construction: {pairs}{more}."
    ]


def _provenance(workdir: Path, results) -> list[str]:
    """The newest session's code, packages and machine, and a warning when the cells came from
    several commits, machines or package sets."""
    sessions = [s for r in results for s in provenance.read(workdir / "cells" / r.name / "run")]
    lines = [provenance.summary(sessions)]
    mixed = provenance.differences(sessions)
    if mixed:
        lines.append(
            f"**Mixed provenance**: the cells were trained by {'; '.join(mixed)} (a cell resumed "
            f"elsewhere counts each session). Float results differ across these; the verdicts "
            f"are built not to."
        )
    return [" ".join(lines), ""]


def write_report(workdir: Path, title: str = "Ablation report") -> dict:
    """(Re)build every output from the cell results found under workdir/cells."""
    workdir = Path(workdir)
    results = load_results(workdir, warn)
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
    verdicts(f["verdicts"], workdir, made)
    plan = load_plan(workdir)
    keys = [a.key for a in axes]
    write_json_atomic(
        workdir / "verdicts.json",
        {
            "level": f["level"],
            "claims": [v.record(keys) for v in f["verdicts"]],
            "exploratory": f["exploratory_records"],
            "seeds_plan": plan,
        },
    )
    seeds = sorted({str(r.overrides.get("seed", 0)) for r in results}, key=_seed_order)
    section = lambda name, items: (
        [f"## {name}", "", *[f"- {x}" for x in items], ""] if items else []
    )
    lines = [
        f"# {title}",
        "",
        f"{len(results)} cells, {len(rows)} configurations x seeds {', '.join(seeds)} "
        f"(mean ± sample std over seeds). Table: [results.md](results.md), data: results.csv.",
        "",
        *_provenance(workdir, results),
        *([_recipe(spec), ""] if spec.get("recipe") else []),
        f["rules"],
        "",
        *section("Claims", f["claims"]),
        *section("Seeds added where a claim needed them", _plan_lines(plan, results)),
        *section(
            f"Exploratory comparisons ({len(f['exploratory'])}, named by no claim; Holm's "
            "procedure at 5%, each interval at its Holm level)",
            f["exploratory"],
        ),
        *section("Gradients and activations", f["gradients"]),
        *section("Notes", f["notes"] + _reused(results) + time_split(results)),
        "## Figures",
        "",
        *[f"![{m}]({m})" for m in made],
        "",
        "## Results",
        "",
        (workdir / "results.md").read_text(),
    ]
    write_text_atomic(workdir / "report.md", "\n".join(lines))
    return {"rows": rows, "plots": made, "findings": f}
