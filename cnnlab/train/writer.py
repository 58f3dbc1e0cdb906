"""Metrics to a JSONL file and TensorBoard event files (tensorboardX: no TensorFlow)."""

import json
import math
from pathlib import Path


class MetricWriter:
    def __init__(self, workdir: Path, process_index: int = 0):
        self.enabled = process_index == 0
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.jsonl = (Path(workdir) / "metrics.jsonl").open("a")
            self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in metrics.items()}
        self.jsonl.write(json.dumps({"step": step, "split": split, **clean}) + "\n")
        self.jsonl.flush()
        for k, v in clean.items():
            if math.isfinite(v):
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()
