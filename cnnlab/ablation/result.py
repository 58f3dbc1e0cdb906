"""The contract between the grid runner and the report: one cell's result, as result.json."""

import dataclasses
import json
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


def load_results(workdir: Path) -> list[CellResult]:
    """Every cell result under workdir/cells, in cell-name order."""
    return [CellResult.load(p) for p in sorted(Path(workdir).glob("cells/*/result.json"))]
