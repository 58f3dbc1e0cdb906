"""Metrics to a JSONL file and TensorBoard event files (tensorboardX: no TensorFlow)."""

import json
import math
from pathlib import Path

from cnnlab.records import read_jsonl


def _line(record: dict) -> str:
    """One strict JSON line: JSON has no NaN or infinity, they are written as null."""
    clean = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    return json.dumps(clean, allow_nan=False) + "\n"


class MetricWriter:
    """Appends to WORKDIR/metrics.jsonl. A run resumed at `resume_step` first drops the records
    of later steps (written before the restart, re-run now), so every step has one record."""

    def __init__(self, workdir: Path, process_index: int = 0, resume_step: int = 0):
        self.enabled = process_index == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            path = Path(workdir) / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            keep = [r for r in read_jsonl(path) if r["step"] <= resume_step]
            if len(keep) < len(lines):  # records of later steps, or a line cut short by a kill
                tmp = path.with_suffix(".jsonl.tmp")
                tmp.write_text("".join(_line(r) for r in keep))
                tmp.replace(path)
            self.jsonl = path.open("a")
            self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        self.jsonl.write(_line({"step": step, "split": split, **clean}))
        self.jsonl.flush()
        for k, v in clean.items():
            if math.isfinite(v):
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
