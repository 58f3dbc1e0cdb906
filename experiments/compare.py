"""Replication check: `python -m experiments.compare RUN_A RUN_B [RUN_C ...]`.

Prints the verdicts and estimates of each claim in every workdir's verdicts.json side by side
(the first workdir is the reference), flags each claim whose verdict differs or that one run
lacks, and exits 1 when any does (0 when all agree, 2 on bad input).
"""

import json
import sys
from pathlib import Path

from cnnlab.errors import ConfigError


def load(workdir: str) -> dict:
    path = Path(workdir) / "verdicts.json"
    if not path.is_file():
        raise ConfigError(
            f"{path}: no such file; pass grid workdirs whose report was written "
            f"(python -m experiments.ablate --workdir=DIR [--report_only])"
        )
    try:
        return {c["text"]: c for c in json.loads(path.read_text())["claims"]}
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: not a verdicts.json ({type(e).__name__}: {e})") from None


def cell(c: dict | None) -> str:
    if c is None:
        return "(absent)"
    if c["estimate"] is None or c["ci_low"] is None:
        return f"{c['verdict']}, {c['seeds']} seeds"
    return (
        f"{c['verdict']} {c['estimate']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] "
        f"n={c['seeds']}"
    )


def compare(workdirs: list[str]) -> tuple[list[str], int]:
    """-> (table lines, number of claims whose verdicts differ)."""
    runs = [load(w) for w in workdirs]
    texts = list(dict.fromkeys(t for r in runs for t in r))
    lines = [
        "| claim | " + " | ".join(workdirs) + " | agree |",
        "|---|" + "---|" * (len(workdirs) + 1),
    ]
    differ = 0
    for t in texts:
        got = [r.get(t) for r in runs]
        same = None not in got and len({c["verdict"] for c in got}) == 1
        differ += not same
        row = [t, *(cell(c) for c in got), "yes" if same else "**NO**"]
        lines.append("| " + " | ".join(row) + " |")
    return lines, differ


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any(a.startswith("-") for a in argv):
        print("usage: python -m experiments.compare RUN_A RUN_B [RUN_C ...]", file=sys.stderr)
        return 2
    try:
        lines, differ = compare(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    n = len(lines) - 2
    print(f"{differ} of {n} claims differ" if differ else f"all {n} claims agree")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
