"""The contract between the grid runner and the report: one cell's result, as result.json."""

import dataclasses
import json
import os
from pathlib import Path

from cnnlab.records import write_json_atomic


@dataclasses.dataclass
class CellResult:
    """One training run of a grid: its overrides, final metrics and diagnostics.

    `metrics` are the run's final eval metrics (test `accuracy` / `loss` per head with running
    BN statistics, `train_subset/...` in eval mode, `precise_bn/...` with recomputed statistics);
    `train_loss` is the final head's training cross-entropy averaged over the last 10% of steps.
    """

    name: str
    overrides: dict
    status: str = "failed"  # 'done' or 'failed'
    reason: str | None = None  # why it failed
    metrics: dict = dataclasses.field(default_factory=dict)
    train_loss: float | None = None
    params: int | None = None
    macs: int | None = None
    # wall time of compile + first step, and the mean of the later steps, as the step ran (with
    # batch_seeds one vmapped step trained the cell's seeds together)
    first_step_s: float | None = None
    step_s: float | None = None
    grad_norms: dict = dataclasses.field(default_factory=dict)  # {step: [(kernel path, norm)]}
    sparsity: dict = dataclasses.field(default_factory=dict)  # {tap: fraction of zeros}
    curves: list = dataclasses.field(default_factory=list)  # metrics.jsonl records
    # seconds of the cell's wall time: compile, data, ... (batched: its share of the group's)
    timing: dict = dataclasses.field(default_factory=dict)
    # the cell whose result this one reuses: it would have trained identically
    # (cnnlab.ablation.duplicates); None for a cell that trained
    same_as: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "done"

    def save(self, path: Path) -> None:
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: Path) -> "CellResult":
        raw = json.loads(Path(path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def read_result(path: Path, warn=None, move_aside: bool = False) -> CellResult | None:
    """A cell's result.json, or None when there is none or it is garbled (written by hand, cut
    by a disk error: this code writes it atomically); a garbled one is named in a warning and,
    with `move_aside`, renamed to result.json.garbled (kept) so that the cell runs again."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return CellResult.load(path)
    except (ValueError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
        kept = path.with_name(path.name + ".garbled")
        if move_aside:
            os.replace(path, kept)
        if warn is not None:
            what = f"moved to {kept.name}; the cell runs again" if move_aside else "skipped"
            warn(f"warning: {path} is garbled ({type(e).__name__}: {e}); {what}")
        return None


def load_results(workdir: Path, warn=None) -> list[CellResult]:
    """Every readable cell result under workdir/cells, in cell-name order (garbled: skipped)."""
    paths = sorted(Path(workdir).glob("cells/*/result.json"))
    return [r for p in paths if (r := read_result(p, warn)) is not None]
