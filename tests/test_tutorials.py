"""The tutorials run top to bottom as a reader would run them (full tier).

Each tutorial runs in a fresh folder that looks like the repository's top folder to its
commands (`experiments/` linked, a `./run` that runs this Python with the repository
importable), with HOME, the data folder and the caches inside it. Blocks run in page order:
```python title="FILE"``` is saved as FILE, other ```python``` blocks are executed in one
namespace, ```bash``` blocks run through bash. Two departures, both named here: the weights
download (no network in the tests) is replaced by seeded random weights in torchvision's
naming, written where `fetch` puts the file; and the fine-tune gets a test-sized budget.
"""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"
FENCE = re.compile(r'^```(\w*)(?: title="([^"]+)")?\n(.*?)^```', re.S | re.M)
BUDGET = (  # appended to a fine-tune command: the tutorial's recipe at a test's size
    " --config.data.image_size=32 --config.data.batch_size=4 --config.phase1.steps=3"
    " --config.phase2.steps=3 --config.train.eval_every=3"
)


def blocks(page: Path) -> list[tuple[str, str | None, str]]:
    """(language, title, code) of every fenced block, in page order ('' for a shown output)."""
    return FENCE.findall(page.read_text())


def seeded_resnet18(path: Path) -> None:
    """torchvision's resnet18 state dict with seeded random values, as a safetensors file
    (cnnlab tells formats by their first bytes, so the .pth name does not matter)."""
    from safetensors.numpy import save_file

    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "pretrained"))
    import seeded

    golden = np.load(ROOT / "tests" / "fixtures" / "pretrained" / "torchvision_golden.npz")
    import json

    names = json.loads(str(golden["resnet18/names"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(seeded.weights(names, 0), str(path))


def run_tutorial(page: Path, here: Path) -> dict:
    """Run every block of `page` in `here`. -> the Python blocks' namespace."""
    home = here / "home"
    env = {**os.environ, "HOME": str(home), "PYTHONPATH": str(ROOT),
           "CNNLAB_DATA_DIR": str(here / "data"),
           "CNNLAB_CACHE_DIR": str(home / ".cache/cnnlab")}  # fmt: skip
    (here / "experiments").symlink_to(ROOT / "experiments")
    shim = here / "run"
    shim.write_text(f'#!/bin/sh\nshift\nexec "{sys.executable}" "$@"\n')  # ./run python ARGS
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    namespace: dict = {}
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    os.chdir(here)
    os.environ.update(env)
    try:
        for language, title, code in blocks(page):
            if title:
                (here / title).write_text(code)
            elif language == "python":
                exec(compile(code, str(page.relative_to(ROOT)), "exec"), namespace)
            elif language == "bash":
                lines = []
                for line in code.replace("\\\n", " ").splitlines():
                    if "cnnlab.pretrained fetch torchvision/resnet18" in line:
                        seeded_resnet18(home / ".cache/cnnlab/pretrained/resnet18-f37072fd.pth")
                        continue
                    if "experiments.finetune" in line:
                        line = line.split("#")[0] + BUDGET
                    lines.append(line)
                out = subprocess.run(["bash", "-ec", "\n".join(lines)], env=env, cwd=here,
                                     capture_output=True, text=True, timeout=1200)  # fmt: skip
                assert out.returncode == 0, (code, out.stdout[-2000:], out.stderr[-3000:])
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
    return namespace


def test_every_tutorial_is_run_here():
    assert {p.name for p in TUTORIALS.glob("*.md")} == {
        "first-ablation.md", "fine-tune-own-images.md", "new-block.md"}  # fmt: skip


@pytest.mark.slow  # a 4-cell grid, then its report again with a second claim: about 2 min
def test_tutorial_first_ablation(tmp_path):
    run_tutorial(TUTORIALS / "first-ablation.md", tmp_path)
    report = (tmp_path / "runs/my_grid/report.md").read_text()
    assert len(list((tmp_path / "runs/my_grid/cells").glob("*/result.json"))) == 4
    for claim in ("The skip connection helps ResNet-8", "costs ResNet-8 at most 0.05"):
        assert re.search(rf"\*\*[^*]*{re.escape(claim)}[^*]*\*\*: \*\*(held|negligible|"
                         r"contradicted|inconclusive)\*\*", report), claim  # fmt: skip
    for figure in ("verdicts.png", "curves.png", "grad_norms.png"):
        assert (tmp_path / "runs/my_grid" / figure).stat().st_size > 10_000, figure


@pytest.mark.slow  # prepare a folder, two phases of ResNet-18 at a test's budget: about 2 min
def test_tutorial_fine_tune_own_images(tmp_path):
    ns = run_tutorial(TUTORIALS / "fine-tune-own-images.md", tmp_path)
    assert len(list((tmp_path / "my_images").glob("*/*.png"))) == 60
    work = tmp_path / "runs/my_images"
    assert (work / "report.md").exists() and (work / "curves.png").exists()
    summary = (work / "seed0/finetune/phase1/summary.txt").read_text()
    assert "Trainable params:     1,539" in summary  # the new 3-way head on 512 features
    evaluation = json.loads((work / "evaluation_test.json").read_text())  # section 6
    assert evaluation["examples"] == 12 and (work / "confusion_test.png").exists()
    assert ns["about"]["classes"] == ["circle", "square", "stripes"]  # the exported model's
    assert ns["logits"].shape == (1, 3)


@pytest.mark.slow  # four 60-step runs of ResNet-8 and its SE twin: about 1 min
def test_tutorial_new_block(tmp_path, capsys):
    """The page's shown outputs are what its blocks print (the parameter and MAC table
    exactly), and the grid judged its claim."""
    ns = run_tutorial(TUTORIALS / "new-block.md", tmp_path)
    printed = capsys.readouterr().out.splitlines()
    shown = [code for lang, _, code in blocks(TUTORIALS / "new-block.md") if not lang]
    assert len(shown) == 2  # the model's outputs, then the counts
    for output in shown:
        for line in output.strip().splitlines():
            assert line in printed, (line, printed)
    claim = ns["report"]["findings"]["claims"][0]
    assert claim.startswith("**Squeeze-and-excitation helps ResNet-8**: **"), claim
