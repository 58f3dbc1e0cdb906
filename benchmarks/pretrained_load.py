"""How long `cnnlab.pretrained.load` takes for ResNet-50, and how much memory beyond the weights.

    ./run python -m benchmarks.pretrained_load   # .safetensors; also .pth where .venv-torch is

Seeded random weights (tests/fixtures/pretrained/seeded.py) in torchvision's names are written
as .safetensors (and by the real torch.save through .venv-torch, if present); each load runs in
a fresh process, 3 times, and reports the median wall time and the process's peak RSS above
its RSS after `import cnnlab.pretrained` (ru_maxrss); less the loaded model's own copy (the
file's size: float32 either way), that is what loading costs beyond the result.
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import resource, sys, time
import jax
from cnnlab import pretrained
def rss(): return open('/proc/self/status').read().split('VmRSS:')[1].split()[0]
base = int(rss())
t = time.perf_counter()
model, v = pretrained.load('torchvision/resnet50', sys.argv[1])
jax.block_until_ready(v)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(dt, (peak - base) * 1024)
"""


def main():
    sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "pretrained"))
    import numpy as np
    import seeded
    from safetensors.numpy import save_file

    golden = np.load(ROOT / "tests" / "fixtures" / "pretrained" / "torchvision_golden.npz")
    names = json.loads(str(golden["resnet50/names"]))
    weights = seeded.weights(names, 0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = {"safetensors": Path(tmp) / "r50.safetensors"}
        save_file(weights, str(files["safetensors"]))
        torch_py = ROOT / ".venv-torch" / "bin" / "python"
        if torch_py.exists():
            np.savez(Path(tmp) / "w.npz", **weights)
            files["pth"] = Path(tmp) / "r50.pth"
            subprocess.run([str(torch_py), "-c", (
                "import numpy as np, torch, sys; w = np.load(sys.argv[1]); "
                "torch.save({k: torch.from_numpy(w[k]) for k in w.files}, sys.argv[2])"),
                str(Path(tmp) / "w.npz"), str(files["pth"])], check=True)  # fmt: skip
        for fmt, path in files.items():
            runs = []
            for _ in range(3):
                out = subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=ROOT,
                                     capture_output=True, text=True, check=True)  # fmt: skip
                runs.append([float(x) for x in out.stdout.split()])
            size = path.stat().st_size
            t = statistics.median(r[0] for r in runs)
            mem = statistics.median(r[1] for r in runs)
            rows.append((fmt, size, t, mem))
    print("| format | file MB | load s (median of 3) | peak RSS beyond import, MB | beyond the "
          "model's own copy, x file size |")  # fmt: skip
    print("|---|---|---|---|---|")
    for fmt, size, t, mem in rows:
        beyond = (mem - size) / size
        print(f"| {fmt} | {size / 1e6:.1f} | {t:.2f} | {mem / 1e6:.0f} | {beyond:.2f}x |")


if __name__ == "__main__":
    main()
