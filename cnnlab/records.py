"""Files that runs and reports share: atomic JSON writes and the metrics.jsonl log."""

import json
import os
from pathlib import Path


def write_json_atomic(path: Path, obj) -> None:
    """Write then rename; the temporary name is per process, so that every process of a
    multi-host run may write the same (identical) file into a shared directory."""
    path = Path(path)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=float))
    os.replace(tmp, path)


def read_metrics(run: Path) -> dict[tuple[str, int], dict]:
    """A run's metrics.jsonl as {(split, step): metrics}; a resumed run's re-logged steps keep
    the last record."""
    path = Path(run) / "metrics.jsonl"
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            m = json.loads(line)
            out[(m.pop("split"), m.pop("step"))] = m
    return out
