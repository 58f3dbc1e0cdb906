"""Files that runs and reports share: atomic JSON writes and the metrics.jsonl log."""

import json
import math
import os
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write a temporary file, flush it to disk, then rename it over `path`: a reader (or a run
    killed mid-write) finds the old file or the new one, never half of one. The temporary name
    is per process, so that every process of a multi-host run may write the same (identical)
    file into a shared directory."""
    write_bytes_atomic(path, text.encode())


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """`write_text_atomic` for bytes."""
    path = Path(path)
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finite(obj):
    """`obj` with every NaN or infinite float replaced by None: JSON has no NaN (Python's json
    writes a bare `NaN` that strict parsers refuse)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json_atomic(path: Path, obj) -> None:
    """Strict JSON (non-finite numbers as null), written atomically."""
    obj = json.loads(json.dumps(obj, default=float))  # numpy scalars and the like as floats
    write_text_atomic(path, json.dumps(finite(obj), indent=1, allow_nan=False))


def read_metrics(run: Path) -> dict[tuple[str, int], dict]:
    """A run's metrics.jsonl as {(split, step): metrics}; a resumed run's re-logged steps keep
    the last record."""
    out = {}
    for m in read_jsonl(Path(run) / "metrics.jsonl"):
        key = (m.pop("split"), m.pop("step"))
        out[key] = {k: math.nan if v is None else v for k, v in m.items()}  # null: NaN
    return out


def read_jsonl(path: Path) -> list[dict]:
    """The whole JSON records of a .jsonl file, [] if there is none (a line cut short by a
    kill is dropped)."""
    out = []
    for line in Path(path).read_text().splitlines() if Path(path).exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
