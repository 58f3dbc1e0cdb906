"""docs/img/verdict_regions.png: example intervals in each decision region of the superiority
rules (./run python docs/img/verdict_regions.py, from the repository root)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cnnlab.ablation.claims import RULES
from cnnlab.ablation.plots import VERDICT_COLOURS

m = 0.02
examples = [
    (0.004, 0.03),
    (0.003, 0.016),
    (-0.006, 0.014),
    (-0.015, 0.012),
    (-0.01, 0.03),
    (-0.03, -0.01),
]
fig, ax = plt.subplots(figsize=(7.5, 3.0))
for i, (lo, hi) in enumerate(examples):
    v = RULES["helps"].region(lo, hi, m)
    y = len(examples) - i
    ax.errorbar(
        [(lo + hi) / 2],
        [y],
        xerr=[[(hi - lo) / 2]],
        fmt="o",
        color=VERDICT_COLOURS[v],
        capsize=4,
        lw=2,
    )
    ax.text(0.034, y, v, color=VERDICT_COLOURS[v], va="center", fontsize=9)
ax.axvline(0, color="black", lw=0.8)
ax.axvline(m, color="tab:blue", ls="--", lw=1)
ax.text(m, 0.35, " margin m", color="tab:blue", fontsize=8)
ax.text(0, 0.35, " 0", fontsize=8)
ax.set(
    xlim=(-0.035, 0.045),
    ylim=(0, len(examples) + 1),
    yticks=[],
    xlabel="interval of the effect (e.g. test-accuracy gain b - a), margin m = 0.02",
)
TITLE = (
    "helps / hurts / degrades: held (lo > 0, hi >= m), negligible (lo > 0, hi < m),\n"
    "contradicted (lo <= 0, hi < m), inconclusive (lo <= 0, hi >= m)"
)
ax.set_title(TITLE, fontsize=9, loc="left")
ax.grid(alpha=0.3, axis="x")
fig.tight_layout()
fig.savefig("docs/img/verdict_regions.png", dpi=110)
