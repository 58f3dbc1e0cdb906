"""The main job at two commits on one machine, one after the other: wall time, split, verdicts.

    ./run python -m benchmarks.main_job --old=6a2510a              # old vs the working tree
    ./run python -m benchmarks.main_job --old=6a2510a --new=HEAD --rounds=2

Each commit other than the working tree is checked out in a git worktree under --scratch (its
own `.venv`, made by its `./run` the first time: set-up is not timed). Each round runs the old
then the new `./run python -m experiments.ablate --workdir=<fresh dir>` (a cold compilation
cache, as a newcomer's first run) and times the whole command. For each run it prints the wall
time, where the cells' time went (the sum of every cell's result.json timing) and the four
verdicts with their estimates; then new / old. Results go to benchmarks/results/ as JSON. The
two commits must give the same verdicts: the speed-up may not change what the grid finds.
"""

import argparse
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("compile_s", "data_s", "compute_s", "eval_s", "checkpoint_s", "other_s")


def cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(x.split(":", 1)[1].strip() for x in out.splitlines() if "Model name" in x)
        count = next(x.split(":", 1)[1].strip() for x in out.splitlines() if x.startswith("CPU(s)"))
        return f"{model}, {count} CPUs"
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def checkout(commit: str, scratch: Path) -> Path:
    """A worktree of `commit` under `scratch` (None/'.' : this working tree)."""
    if commit in (None, "."):
        return ROOT
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                           cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    if found.returncode != 0:
        raise SystemExit(f"--old/--new: {commit!r} is not a commit of this repository; give a "
                         "hash or a ref that `git log` shows")  # fmt: skip
    sha = found.stdout.strip()
    tree = scratch / f"tree-{sha[:10]}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT,
                       check=True, capture_output=True)  # fmt: skip
    subprocess.run(["./run", "python", "-c", "import cnnlab"], cwd=tree, check=True,
                   capture_output=True)  # fmt: skip  # its .venv, outside the timing
    return tree


def run_job(tree: Path, workdir: Path) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    t0 = time.perf_counter()
    proc = subprocess.run(["./run", "python", "-m", "experiments.ablate", f"--workdir={workdir}"],
                          cwd=tree, capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the main job failed in {tree}:\n{proc.stderr[-2000:]}")
    split = dict.fromkeys(PARTS, 0.0)
    for f in workdir.glob("cells/*/result.json"):
        timing = json.loads(f.read_text()).get("timing", {})
        for k in PARTS:
            split[k] += timing.get(k, 0.0)
    found = json.loads((workdir / "verdicts.json").read_text())
    claims = found if isinstance(found, list) else found.get("claims", [])
    verdicts = [(c.get("text"), c.get("verdict"), c.get("estimate")) for c in claims]
    return {"wall_s": wall, "split": split, "verdicts": verdicts}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="the commit to compare against")
    ap.add_argument("--new", default=".", help="a commit, or '.' (the working tree)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--scratch", default="/tmp/cnnlab_main_job")
    args = ap.parse_args()
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    trees = {"old": checkout(args.old, scratch), "new": checkout(args.new, scratch)}
    runs = {"old": [], "new": []}
    for r in range(args.rounds):
        for side in ("old", "new"):
            out = run_job(trees[side], scratch / f"{side}-{r}")
            runs[side].append(out)
            split = ", ".join(f"{k.removesuffix('_s')} {v:.0f}" for k, v in out["split"].items())
            print(f"round {r} {side}: {out['wall_s']:.1f} s ({split})", flush=True)
    med = {s: sorted(x["wall_s"] for x in v)[len(v) // 2] for s, v in runs.items()}
    print(f"\nCPU: {cpu()}")
    print(f"old {args.old}: {med['old']:.1f} s; new {args.new}: {med['new']:.1f} s; "
          f"new / old = {med['new'] / med['old']:.2f}")  # fmt: skip
    for (text, v_old, e_old), (_, v_new, e_new) in zip(
        runs["old"][-1]["verdicts"], runs["new"][-1]["verdicts"], strict=True
    ):
        print(f"  {text}: {v_old} ({e_old:+.4f}) -> {v_new} ({e_new:+.4f})")
    same = all(
        [v for _, v, _ in x["verdicts"]] == [v for _, v, _ in runs["old"][0]["verdicts"]]
        for side in runs.values()
        for x in side
    )
    print("same verdicts in every run" if same else "VERDICTS DIFFER")
    out = ROOT / "benchmarks" / "results" / f"main_job_{time.strftime('%Y-%m-%d')}.json"
    out.write_text(json.dumps({"cpu": cpu(), "old": args.old, "new": args.new, "runs": runs},
                              indent=1))  # fmt: skip
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
