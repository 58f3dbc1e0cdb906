"""The README's Python snippets run as written, and the table it shows is what they print."""

import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_readme_python_blocks_run_and_match_shown_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its grid writes runs/small: here, fresh each time
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 2
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["y"].shape == (8, 16, 16, 64)  # the comment in the first block
    shown = re.search(r"```\n(-{20,}\n.*?)```", README, re.S).group(1)
    assert printed.getvalue().strip() == shown.strip()
    # the notebook block ran a real grid: its claim is judged on 2 paired seeds
    (claim,) = namespace["out"]["findings"]["claims"]
    assert claim.startswith("**The skip helps ResNet-8**: **")
    assert (
        "skip False -> True at depth=8: test accuracy" in claim and "over 2 paired seeds" in claim
    )
    assert len(list((tmp_path / "runs" / "small" / "cells").glob("*/result.json"))) == 4


def test_ci_runs_the_test_commands_the_readme_names():
    """.ci/run runs the README's default test command and its full tier, nothing else."""
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.startswith("./run ")]
    assert commands == ["./run python -m pytest", "./run python -m pytest -m slow"]
    flat = " ".join(README.split())  # the full tier's command may wrap across a line
    assert all(f"`{c}`" in flat or f"{c} " in README for c in commands), commands
