"""Auxiliary-loss study: when do side heads help a deep plain net? Side-loss kind x norm x lr.

    ./run python -m experiments.ablate --config=experiments/configs/ablate_aux_loss.py

DSN (Lee et al. 2015) added a classifier to hidden layers of nets without BatchNorm, whose
early layers learn slowly; with BatchNorm in every block the default grid finds gradients
*growing* toward the input, and its side-head claim undecided. This grid puts the premise
back: plain-20 (the CIFAR ResNet-20 without its shortcuts, He-initialised) with BatchNorm and
with no normalisation at all (`model.kwargs.norm='none'`: each conv gets a bias), 300 SGD steps
on the embedded digits, and side heads on stage1 + stage2 (linear heads, constant weight 0.3)
of three kinds (`loss.side_loss`): cross-entropy ('ce', GoogLeNet / Inception-v3), DSN's
squared hinge ('hinge') and BYOT's self-distillation ('distill', Zhang et al. 2019: soft
targets from the final head at T = 3, alpha = 0.3, and a hint to the final feature, lambda 0.03).

Why these settings (pilots on a 2-core Intel Xeon, one seed each, before this grid was fixed):
without normalisation, plain-8 / -14 / -20 reached 0.91 / 0.33 / 0.07 test accuracy at peak
lr 0.02 and 0.94 / 0.91 / 0.73 at 0.05 after 300 steps (AdamW at 1e-3: 0.95 / 0.95 / 0.90).
So plain-20 without a norm sat at chance at lr 0.02 and learned, slowly, at 0.05 (on the pilot's
seed; the grid found this seed-dependent): both lrs are
in the grid, because the side heads' effect may differ between them and choosing one would
choose the answer (one seed at 0.02: CE heads 0.35 against 0.07 without; at 0.05: 0.15 against
0.73). The issue's outside probe (150 steps, lr 0.001-0.05, stayed at chance) stopped at half
this budget. With BatchNorm plain-20 trains well at the default grid's lr 0.1 (0.945); here it
runs at 0.05, the higher of the two lrs.

Each kind's baseline is the same net without side heads. Without taps `side_loss` changes
nothing, so the no-head cells are listed once per kind (`side_taps=none` with `side_loss` ce,
distill, hinge), so that every claim compares two cells of the grid (a claim fixes every other
axis); the grid finds them identical before training (cnnlab.ablation.duplicates) and trains
each once: 54 cells, 36 trained, 18 reusing their `ce` twin's result: 10 minutes on 2 cores
(15 when all 54 trained; the same results bit for bit: RESULTS.md).

Claims, margins set before any run as in the default grid (0.02 test accuracy, 6 of 297
digits): for each kind, "side heads help" at each (norm, lr) setting: nine claims, each at 95%
(not corrected for multiplicity: read them as nine separate questions). What it showed:
experiments/RESULTS.md and the README.
"""

from experiments.configs import ablate_default

KINDS = ("ce", "hinge", "distill")
HEADS = ("stage1", "stage2")
SETTINGS = (("none", 0.02), ("none", 0.05), ("batch", 0.05))  # (norm, peak lr)
SOURCE = {
    "ce": "cross-entropy side heads (DSN's question; GoogLeNet's loss)",
    "hinge": "squared-hinge side heads (DSN's own companion loss)",
    "distill": "self-distilling side heads (BYOT, Zhang et al. 2019)",
}


def get_config():
    c = ablate_default.get_config()  # the default grid's recipe, then this study's changes
    c.name = "ablate_aux_loss"
    c.train.steps = 300
    c.train.eval_every = 50
    c.grad_norm_steps = (0, 150)
    c.model.kwargs.depth = 20
    c.model.kwargs.skip = False
    c.model.kwargs.zero_init_residual = False  # no residual branch to zero in a plain net
    c.loss.side_weight = 0.3
    c.grid = tuple(
        (
            ("model.kwargs.norm", (norm,)),
            ("optim.lr", (lr,)),
            ("loss.side_taps", ((), HEADS)),
            ("loss.side_loss", KINDS),
            ("seed", (0, 1, 2)),
        )
        for norm, lr in SETTINGS
    )
    c.claims = tuple(
        dict(text=f"{SOURCE[kind]} help plain-20 ({'no norm' if norm == 'none' else 'BatchNorm'}, "
                  f"lr {lr})",
             rule="helps", margin=0.02, axis="loss.side_taps", compare=((), HEADS),
             where=(("model.kwargs.norm", norm), ("optim.lr", lr), ("loss.side_loss", kind)))
        for norm, lr in SETTINGS
        for kind in KINDS
    )  # fmt: skip
    return c
