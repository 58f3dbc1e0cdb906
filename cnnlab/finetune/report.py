"""Report of a fine-tuning study: results.json, curves.png and report.md (mean ± std over seeds)."""

import math
from pathlib import Path

from cnnlab import provenance
from cnnlab.plotting import subplots
from cnnlab.records import read_metrics, write_json_atomic, write_text_atomic
from cnnlab.stats import mean_std

ARMS = (
    ("probe", "linear probe (scikit-learn logistic regression on frozen features)"),
    ("phase1", "fine-tune, phase 1 (new head, frozen backbone)"),
    ("finetune", "fine-tune, phases 1 + 2 (last blocks unfrozen)"),
    ("scratch", "from scratch (same data, same step budget)"),
)


def _curves(run_dirs: list[Path], split: str, key: str) -> list[tuple[int, float]]:
    """One curve over consecutive runs (phase 2 continues phase 1's step count)."""
    points, offset = [], 0
    for run in run_dirs:
        logged = read_metrics(run)
        steps = sorted(s for (sp, s), m in logged.items() if sp == split and key in m)
        points += [(offset + s, logged[(split, s)][key]) for s in steps]
        offset += max((s for (_, s) in logged), default=0)
    return points


def _plot(c, workdir: Path, seeds) -> str:
    fig, axes = subplots(1, 2, figsize=(10, 3.8))
    for arm, color in (("finetune", "tab:blue"), ("scratch", "tab:orange")):
        for i, seed in enumerate(seeds):
            base = workdir / f"seed{seed}"
            dirs = [base / "finetune" / "phase1", base / "finetune" / "phase2"]
            if arm == "scratch":
                dirs = [base / "scratch"]
            for ax, (split, key) in zip(axes, (("val", "loss"), ("test", "accuracy")), strict=True):
                pts = _curves(dirs, split, key)
                if pts:
                    ax.plot(
                        *zip(*pts, strict=True),
                        color=color,
                        alpha=0.8,
                        label=arm if i == 0 else None,
                    )
    if c.phase1.steps and c.phase2.steps:
        for ax in axes:
            ax.axvline(c.phase1.steps, color="gray", ls=":", lw=1)
    axes[0].set(xlabel="step", ylabel="validation loss", title="validation loss (early stopping)")
    axes[0].set_yscale("log")  # from-scratch losses start orders of magnitude higher
    axes[1].set(xlabel="step", ylabel="test accuracy", title="test accuracy")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(workdir / "curves.png", dpi=110)
    return "curves.png"


def write_report(c, workdir: Path, runs: dict, notes: tuple[str, ...] = ()) -> Path:
    """runs: {seed: {'finetune': [PhaseResult], 'scratch': TrainResult (optional)}}; `notes`:
    lines said while setting up (what was capped to fit the data)."""
    from cnnlab import inference

    workdir = Path(workdir)
    per_seed = {seed: _seed_row(r) for seed, r in runs.items()}
    summary = _summary(per_seed)
    first = min(runs)
    loaded = _loaded(workdir / f"seed{first}" / "finetune" / "finetune.json")
    has_run = any((workdir / f"seed{first}" / "finetune").glob("phase*/checkpoints"))
    # the first seed's last phase, as its table says (none: a report of results given here)
    classes = inference.evaluate(workdir) if has_run else None
    setup = {**_setup(c), "notes": list(notes), "source_loaded": loaded}
    write_json_atomic(
        workdir / "results.json",
        {"setup": setup, "summary": summary, "seeds": per_seed, "per_class": classes},
    )
    plot = _plot(c, workdir, list(runs))
    confusion = classes and inference.plot_confusion(classes, workdir / "confusion.png").name
    lines = _header(c, list(runs)) + [f"- Fitted to the data: {n}." for n in notes]
    lines += [*_source_lines(loaded), "", *_provenance(workdir)]
    lines += _tables(c, summary, per_seed) + _stops(c, per_seed)
    lines += _per_class(classes, first, confusion) if classes else []
    lines += _finding(summary, per_seed)
    lines += ["", f"![validation loss and test accuracy]({plot})", ""]
    path = workdir / "report.md"
    write_text_atomic(path, "\n".join(lines))
    return path


def _loaded(path: Path) -> dict:
    """What the fine-tune loaded (finetune.json's 'source'), {} when absent."""
    import json

    try:
        return json.loads(path.read_text()).get("source") or {}
    except (OSError, ValueError):
        return {}


def _source_lines(loaded: dict) -> list[str]:
    """The source's step, the re-initialised modules and any adapted kernel, one line each."""
    lines = []
    if loaded.get("loaded"):
        step = f" (step {loaded['step']})" if loaded.get("step") else ""
        lines.append(f"- Loaded {loaded['loaded']} backbone arrays from the source{step}; "
                     f"re-initialised: {', '.join(loaded.get('new_modules') or [])} (a "
                     f"re-initialised conv's norm with it).")  # fmt: skip
    for where, how in (loaded.get("adapted") or {}).items():
        lines.append(f"- Adapted `{where}`: {how}.")
    return lines


def _stops(c, per_seed: dict) -> list[str]:
    """Per seed and phase: ran to the end or stopped early, and which checkpoint's test
    accuracy the tables show."""
    lines = ["", "Where each phase ended and which checkpoint its test accuracy is from:", ""]
    for seed, row in per_seed.items():
        parts = []
        for name, h in row["stopped"].items():
            steps = c[name].steps if name in ("phase1", "phase2") else sum(
                c[p].steps for p in ("phase1", "phase2"))  # fmt: skip
            best = (h or {}).get("best_step")
            if h and h.get("stopped"):
                bad = int(h.get("bad_evals") or 0)
                at = (best or 0) + bad * int(c.train.eval_every)
                ended = f"stopped early at step {at} of {steps} ({bad} evals without a " \
                        f"validation-loss drop)"  # fmt: skip
            else:
                ended = f"ran all {steps} steps"
            if c.train.patience and best:
                src = f"step {best}, its best validation loss"
            else:
                src = "its last step"
            parts.append(f"{name} {ended}; test accuracy from {src}")
        lines.append(f"- seed {seed}: " + "; ".join(parts) + ".")
    return lines


def _per_class(result: dict, seed: int, png: str) -> list[str]:
    """The test set (size, class names) and the last phase's per-class accuracy and confusion."""
    from cnnlab.inference import confusion_table

    where = Path(result["run"])
    return [
        "",
        "## Per class",
        "",
        f"The test set: {result['examples']} images of {len(result['class_names'])} classes "
        f"({', '.join(result['class_names'])}). Seed {seed}'s fine-tuned model "
        f"({where.parent.parent.name}/{where.parent.name}/{where.name}, step {result['step']}, "
        f"{result['checkpoint']}): test accuracy {result['accuracy']:.3f}; rows are the true "
        f"class, columns the predicted one.",
        "",
        *confusion_table(result),
        "",
        f"![confusion matrix]({png})",
    ]


def _seed_row(r: dict) -> dict:
    """One seed's arms (final metrics or None), parameter counts and early stopping."""
    phases = {p.name: p for p in r["finetune"]}
    row = {
        "phase1": phases["phase1"].metrics if "phase1" in phases else None,
        "finetune": phases["phase2"].metrics if "phase2" in phases else None,
        "scratch": r["scratch"].metrics if "scratch" in r else None,
        "probe": {"accuracy": r["probe"]} if "probe" in r else None,
        "trainable": {p.name: p.trainable for p in r["finetune"]},
        "frozen": {p.name: p.frozen for p in r["finetune"]},
        "stopped": {p.name: p.early_stopping for p in r["finetune"]},
    }
    if "scratch" in r:
        row["stopped"]["scratch"] = r["scratch"].early_stopping
    return row


def _summary(per_seed: dict) -> dict:
    """Per arm: accuracy and loss as (mean, sample std) over the seeds that ran it, and n."""
    values = {arm: [r[arm] for r in per_seed.values() if r[arm] is not None] for arm, _ in ARMS}
    out = {}
    for arm, _ in ARMS:
        if values[arm]:
            losses = [m["loss"] for m in values[arm] if "loss" in m]  # the probe reports none
            out[arm] = {
                "accuracy": mean_std([m["accuracy"] for m in values[arm]]),
                "loss": mean_std(losses) if losses else None,
                "n": len(values[arm]),
            }
    return out


def _shown(mean: float, std: float, n: int) -> str:
    """'0.912 ± 0.013' over several seeds; one seed has no spread to show: '0.912'."""
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def _setup(c) -> dict:
    return {
        "source": c.finetune.source,
        "model": {"name": c.model.name, **dict(c.model.kwargs)},
        "dataset": c.data.name,
        "classes": list(c.data.classes),
        "train_per_class": c.data.train_per_class,
        "val_per_class": c.data.val_per_class,
        "phase1": c.phase1.to_dict(),
        "phase2": c.phase2.to_dict(),
        "bn": c.finetune.bn,
        "scratch_lr": c.study.scratch_lr,
        "patience": c.train.patience,
    }


def _header(c, seeds: list) -> list[str]:
    return [
        "# Fine-tuning report",
        "",
        f"- Source (pre-trained backbone): `{c.finetune.source}`",
        f"- Model: `{c.model.name}` {dict(c.model.kwargs)}; data: `{c.data.name}` classes "
        f"{list(c.data.classes) or 'all'}, {c.data.train_per_class or 'all'} labelled training "
        f"images per class, {c.data.val_per_class} per class held out for early stopping "
        f"(patience {c.train.patience} evals of {c.train.eval_every} steps).",
        f"- Phase 1: {c.phase1.steps} steps, head lr {c.phase1.lr}, backbone frozen "
        f"(BatchNorm: {c.finetune.bn}). Phase 2: {c.phase2.steps} steps, last "
        f"{c.phase2.unfreeze_last} {c.phase2.unit}s unfrozen, head lr {c.phase2.lr}, backbone lr "
        f"{c.phase2.backbone_lr}.",
        f"- From scratch: same model, data and budget ({c.phase1.steps + c.phase2.steps} steps), "
        f"lr {c.study.scratch_lr}, all parameters trained.",
        f"- Seeds: {seeds} (few-shot draw, head init and data order)"
        + ("; mean ± sample std." if len(seeds) > 1 else "; one seed, so no spread is shown."),
        "",
    ]


def _provenance(workdir: Path) -> list[str]:
    """Every phase run's sessions under `workdir`: the newest's code and machine, and what
    differs between them."""
    sessions = [s for d in sorted(Path(workdir).rglob("provenance.json"))
                for s in provenance.read(d.parent)]  # fmt: skip
    mixed = provenance.differences(sessions)
    return [f"- {provenance.summary(sessions)}", *(f"- **Mixed provenance**: {m}" for m in mixed),
            ""]  # fmt: skip


def _tables(c, summary: dict, per_seed: dict) -> list[str]:
    """The arms' table (mean ± std) and the per-seed table."""
    lines = ["| arm | test accuracy | test loss | seeds |", "|---|---|---|---|"]
    titles = dict(ARMS)
    if not c.phase1.steps:  # phase 2 alone ran
        titles["finetune"] = "fine-tune, phase 2 only (last blocks unfrozen; phase 1 had 0 steps)"
    for arm, title in titles.items():
        if arm in summary:
            n, loss = summary[arm]["n"], summary[arm]["loss"]
            loss = "-" if loss is None or math.isnan(loss[0]) else _shown(*loss, n)
            lines.append(f"| {title} | {_shown(*summary[arm]['accuracy'], n)} | {loss} | {n} |")
    lines += [
        "",
        "| seed | " + " | ".join(a for a, _ in ARMS) + " | trainable / frozen params |",
        "|---" * (len(ARMS) + 2) + "|",
    ]
    for seed, row in per_seed.items():
        accs = [f"{row[a]['accuracy']:.3f}" if row[a] else "-" for a, _ in ARMS]
        counts = ", ".join(
            f"{p}: {row['trainable'][p]:,} / {row['frozen'][p]:,}" for p in row["trainable"]
        )
        lines.append(f"| {seed} | " + " | ".join(accs) + f" | {counts} |")
    return lines


def _finding(summary: dict, per_seed: dict) -> list[str]:
    """Fine-tuned vs from scratch, and phase 1 vs the linear probe, when both ran."""
    lines = []
    tuned = "finetune" if "finetune" in summary else "phase1"  # the last phase that ran
    if tuned in summary and "scratch" in summary:
        gap = summary[tuned]["accuracy"][0] - summary["scratch"]["accuracy"][0]
        wins = sum(
            r[tuned]["accuracy"] > r["scratch"]["accuracy"]
            for r in per_seed.values()
            if r["scratch"]
        )
        verdict = "higher" if gap > 0 else "lower" if gap < 0 else "the same"
        than = "as" if gap == 0 else "than"
        lines += [
            "",
            "## Finding",
            "",
            f"Fine-tuning the pre-trained backbone gives {verdict} test accuracy {than} training "
            f"from scratch on the same labelled images and step budget: "
            f"{100 * gap:+.1f} points on average, better on {wins} of {len(per_seed)} seeds.",
        ]
    if "phase1" in summary and "probe" in summary:
        lines += [
            "",
            f"Phase 1 (the new head trained by SGD on frozen features) reaches "
            f"{summary['phase1']['accuracy'][0]:.3f}; a logistic regression on the same frozen "
            f"features and images reaches {summary['probe']['accuracy'][0]:.3f}: what the "
            f"pre-trained features alone are worth on this task.",
        ]
    return lines
