"""Fine-tune a pre-trained run on another dataset: new head on a frozen backbone, then unfreeze.

    ./run python -m experiments.finetune --config.finetune.source=runs/base \
        --config.data.name=my_images --workdir=runs/finetune

experiments.finetune's default config. The model is the source run's (model.name and
model.kwargs from its config.json; a model key set to another value is an error); the head is
re-initialised for this dataset's classes. A small dataset caps data.val_per_class and
data.batch_size (said in one line). Keys beyond base.py: finetune.*, phase1.*, phase2.*, study.*.
"""

import ml_collections

from experiments.configs import base


def phase(steps, lr, backbone_lr, unfreeze_last) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "steps": steps,  # 0 skips the phase
            "lr": lr,  # peak learning rate of the new head (config.optim's schedule)
            "backbone_lr": backbone_lr,  # of the unfrozen backbone parameters
            "unfreeze_last": unfreeze_last,  # backbone units left trainable (-1: all, 0: none)
            "unit": "block",  # 'layer' (top-level module), 'block' (stageI_blockJ), 'stage'
            "unfreeze": (),  # path patterns made trainable, e.g. ('stage3_*',)
            "freeze": (),  # path patterns frozen (wins), e.g. ('*norm*',)
        }
    )


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    # the phases' schedule as measured for the worked example (no warm-up, lr as given)
    c.optim.schedule, c.optim.warmup_steps, c.optim.lr_batch = "step", 0, 0
    c.train.best_metric = "val_loss"  # with data.val_per_class > 0; else 'accuracy' / 'max'
    c.train.best_mode = "min"
    c.data.val_per_class = 20
    c.train.patience = 4  # evals without a val-loss improvement before a phase stops
    c.train.eval_every = 10  # also the checkpoint interval: a 100-step phase can stop at 50

    c.finetune = ml_collections.ConfigDict()
    c.finetune.source = ""  # --workdir of the pre-training run (or its checkpoints/ directory)
    c.finetune.source_step = 0  # 0: the source's best kept step by its best_metric, else latest
    c.finetune.new = ("head", "side_*")  # top-level modules initialised afresh (not loaded)
    c.finetune.bn = "frozen"  # frozen BN layers: 'frozen' (running stats, Keras) or 'update'

    c.phase1 = phase(steps=100, lr=0.05, backbone_lr=0.0, unfreeze_last=0)  # head only
    c.phase2 = phase(steps=100, lr=0.005, backbone_lr=0.005, unfreeze_last=3)  # 10x lower

    c.study = ml_collections.ConfigDict()
    c.study.seeds = (0,)  # each seed: its own few-shot draw, head init and data order
    c.study.scratch = False  # also train the same model from scratch on the same data and budget
    c.study.scratch_lr = 0.1
    return c
