"""The documentation: every Python block of the docs pages runs as written (in the site's page
order, one namespace, as a reader would paste them) and the table it shows is what they print;
the site builds with warnings as errors; the README is a front page naming the test commands
CI runs."""

import contextlib
import importlib.util
import io
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _files(nav) -> list[str]:
    """The page files of a mkdocs nav (nested sections flattened), in order."""
    out = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        out += _files(value) if isinstance(value, list) else [value]
    return out


def pages(tutorials: bool = False) -> list[Path]:
    """The docs pages in the site's navigation order (mkdocs.yml); the tutorials only when
    asked (they run in the full tier, tests/test_tutorials.py)."""
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    files = [f for f in _files(nav) if tutorials or not f.startswith("tutorials/")]
    return [ROOT / "docs" / f for f in files]


def blocks(text: str) -> list[tuple[int, list[str]]]:
    """The prose blocks of a page as (first line, lines): consecutive non-blank lines outside
    code fences, tables, headings, images and comments; each list item starts a block."""
    out, fence, current = [], False, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
        elif not (fence or not line.strip() or line.startswith(("|", "#", "![", "<!--"))):
            if re.match(r"\s{0,3}([-*]|\d+\.) ", line) and current:
                out.append(current)
                current = []
            current.append((number, line))
            continue
        if current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return [(b[0][0], [line for _, line in b]) for b in out]


def test_every_page_is_in_the_site_and_the_four_kinds_are_there():
    on_disk = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    in_nav = {str(p.relative_to(ROOT / "docs")) for p in pages(tutorials=True)}
    assert on_disk == in_nav, on_disk ^ in_nav
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    sections = [next(iter(e)) for e in nav if isinstance(next(iter(e.values())), list)]
    assert sections == ["Tutorials", "How-to guides", "Reference", "Explanation"]


@pytest.mark.parametrize("page", pages(tutorials=True), ids=lambda p: p.name)
def test_pages_are_scannable(page):
    """A heading at least every 70 source lines, prose blocks of at most 12 lines, code that
    fits the page (at most 100 columns)."""
    text = page.read_text()
    lines = text.splitlines()
    fence, headings, wide = False, [0], []
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fence = not fence
        elif fence and len(line) > 100:
            wide.append(number)
        elif not fence and line.startswith("#"):
            headings.append(number)
    headings.append(len(lines))
    gaps = [(a, b) for a, b in itertools.pairwise(headings) if b - a > 70]
    long = [(first, len(b)) for first, b in blocks(text) if len(b) > 12]
    assert not gaps, f"{page.name}: no heading between these lines: {gaps}"
    assert not long, f"{page.name}: prose blocks over 12 lines (first line, length): {long}"
    assert not wide, f"{page.name}: code lines over 100 columns: {wide}"


def test_the_generated_reference_pages_are_current():
    """docs/reference/{config,cli}.md as docs/reference/generate.py writes them from the code
    (models.md: every registered model, with its published parameter count)."""
    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs/reference/generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for name in ("config.md", "cli.md"):
        assert (ROOT / "docs/reference" / name).read_text() == generate.PAGES[name](), (
            f"docs/reference/{name} is stale: run ./run python docs/reference/generate.py"
        )
    from experiments.configs import base

    config = (ROOT / "docs/reference/config.md").read_text()
    for key in generate._flat(base.get_config()):
        row = next(r for r in config.splitlines() if r.startswith(f"| `{key}` |"))
        assert row.split("|")[-2].strip(), f"config.md: {key} says nothing of what it does"
    from test_models import REFERENCE_PARAMS

    from cnnlab import models

    table = (ROOT / "docs/reference/models.md").read_text()
    for name in models.available():
        row = next(r for r in table.splitlines() if r.startswith(f"| `{name}` |"))
        if name in REFERENCE_PARAMS:
            assert f" {REFERENCE_PARAMS[name]:,} " in row, (name, row)


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
    reference = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("cnnlab.layers.conv", "cnnlab.train.preempt", "cnnlab.ablation.duplicates"):
        assert f'id="{name}"' in reference, name
    assert (tmp_path / "site" / "ablations" / "index.html").exists()
