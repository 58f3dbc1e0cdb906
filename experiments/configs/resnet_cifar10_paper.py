"""The ResNet paper's CIFAR-10 experiment (He et al. 2015, arXiv:1512.03385, section 4.2).

    # CIFAR-10 prepared as TFDS array_record under DIR (README, Data), then:
    ./run python -m experiments.ablate --config=experiments/configs/resnet_cifar10_paper.py \\
        --config.data.data_dir=DIR --workdir=runs/resnet_cifar10_paper

Recipe as published: batch 128, 64k iterations, SGD momentum 0.9, weight decay 1e-4, lr 0.1
divided by 10 at 32k and 48k, a 45k/5k train/val split, 4-pixel pad-and-crop + horizontal flip,
per-channel normalisation, option-A shortcuts, convs He-initialised (section 3.4; the CIFAR
ResNets' default `conv_init='he'`); ResNet-110 starts at lr 0.01 until training error
is below 80% (about 400 iterations), then 0.1. Plain and residual nets of depth 20/32/44/56/110:
10 runs of 64k steps, a GPU/TPU job (on 2 CPU cores a ResNet-20 step at 32x32 takes ~0.35 s:
about 6 hours per run).

Targets, the paper's Table 6 (CIFAR-10 test error, %): ResNet-20 8.75, ResNet-32 7.51,
ResNet-44 7.17, ResNet-56 6.97, ResNet-110 6.43 (best of 5 runs; mean 6.61 ± 0.16). The plain
nets are only plotted (figure 6, left): their error rises with depth, plain-56 above plain-20,
and the paper tabulates no numbers for them. Not yet run with cnnlab.
"""

import ml_collections

from experiments.configs import base


def get_config():
    c = base.get_config()
    c.name = "resnet_cifar10_paper"
    c.data.name = "cifar10"
    c.data.batch_size = 128
    c.data.val_per_class = 500  # 45k train / 5k val
    c.data.augment = True  # cifar10: 4-pixel pad-and-crop + flips
    c.optim.lr = 0.1
    c.optim.lr_batch = 0  # 0.1 at batch 128 as published
    c.optim.schedule = "step"
    c.optim.step_boundaries = (0.5, 0.75)  # 32k and 48k of 64k
    c.optim.warmup_steps = 0
    c.train.steps = 64_000
    c.train.eval_every = 2_000
    c.train.log_every = 100
    c.train.keep_checkpoints = 2
    c.train.train_subset = 5_000
    c.batch_seeds = False  # one seed per configuration: nothing to train together
    c.grad_norm_steps = (0, 32_000)
    c.grid = (
        ("model.kwargs.depth", (20, 32, 44, 56, 110)),
        ("model.kwargs.skip", (False, True)),
        ("seed", (0,)),
    )
    # ResNet-110: lr 0.01 for the first 400 iterations (training error falls below 80% there)
    c.when = (
        (
            (("model.kwargs.depth", 110),),
            (
                ("optim.warmup_steps", 400),
                ("optim.warmup", "constant"),
                ("optim.warmup_factor", 0.1),
            ),
        ),
    )
    c.claims = (
        dict(text="Plain nets degrade with depth (figure 6, left)", rule="degrades",
             margin=0.05, axis="model.kwargs.depth", where=(("model.kwargs.skip", False),)),
        dict(text="Residual nets do not degrade with depth (figure 6, middle)",
             rule="does_not_degrade", margin=0.01, axis="model.kwargs.depth",
             where=(("model.kwargs.skip", True),)),
    )  # fmt: skip
    c.two_stage = ml_collections.ConfigDict({"max_seeds": 0, "budget_s": 0.0})  # one look
    return c
