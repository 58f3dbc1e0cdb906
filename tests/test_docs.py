"""The documentation: every Python block of the docs pages runs as written (in the site's page
order, one namespace, as a reader would paste them) and the table it shows is what they print;
the site builds with warnings as errors; the README is a front page naming the test commands
CI runs."""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def pages() -> list[Path]:
    """The docs pages in the site's navigation order (mkdocs.yml)."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    return [ROOT / "docs" / next(iter(entry.values())) for entry in nav]


def test_docs_python_blocks_run_and_match_shown_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the ablation page's grid writes runs/small: here, fresh
    namespace: dict = {}
    printed = io.StringIO()
    ran = []
    with contextlib.redirect_stdout(printed):
        for page in pages():
            for block in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
                exec(compile(block, str(page.relative_to(ROOT)), "exec"), namespace)
                ran.append(page.name)
    assert ran.count("concepts.md") >= 2 and "ablations.md" in ran
    assert namespace["y"].shape == (8, 16, 16, 64)  # the comment in the first block
    concepts = (ROOT / "docs" / "concepts.md").read_text()
    shown = re.search(r"```\n(-{20,}\n.*?)```", concepts, re.S).group(1)
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
    shown = {line.split("#")[0].strip() for block in re.findall(r"```bash\n(.*?)```", README, re.S)
             for line in block.splitlines()}  # fmt: skip
    for c in commands:  # each whole command, not the prefix of a longer one
        assert c in shown or f"`{c}`" in flat, c


def test_readme_is_a_front_page_whose_links_exist():
    assert len(README.splitlines()) <= 200
    for target in re.findall(r"\]\(((?!http)[^)#]+)", README):
        assert (ROOT / target).exists(), target


@pytest.mark.slow  # builds the site: the full tier
def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d",
                          str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    for name in ("cnnlab.layers.conv", "cnnlab.train.preempt", "cnnlab.ablation.duplicates"):
        assert f'id="{name}"' in reference, name
    assert (tmp_path / "site" / "ablations" / "index.html").exists()
