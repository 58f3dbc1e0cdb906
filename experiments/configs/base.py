"""Base training config: CIFAR ResNet-20 on the embedded 8x8 digits, a few hundred SGD steps.

    ./run python -m experiments.train --config=experiments/configs/base.py --workdir=runs/base

Half a minute on 2 CPU cores (measured: README, Training). Override any key, e.g.
--config.model.kwargs.depth=56 --config.model.kwargs.skip=False --config.loss.side_taps=stage1,
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # initialisation, data order, augmentation, dropout and few-shot draws

    c.data = ml_collections.ConfigDict()
    c.data.name = "cnnlab_digits"  # embedded offline default; or synthetic, cifar10, mnist, ...
    c.data.data_dir = ""  # '' = $CNNLAB_DATA_DIR or ~/.cache/cnnlab/tensorflow_datasets; gs:// ok
    c.data.batch_size = 64  # global batch, divisible by the device count
    c.data.image_size = 0  # 0 = the dataset's own size; else resize to image_size^2
    c.data.augment = True  # pad-and-crop (+ flips where they preserve labels)
    c.data.classes = ()  # keep only these labels, relabelled 0..k-1 in this order; () = all
    c.data.train_per_class = 0  # few-shot: this many training examples per class (0 = all)
    c.data.val_per_class = 0  # held out of train per class as a validation split (0 = none)
    # data.name=synthetic: random images of this shape and class count (a smoke test)
    c.data.synthetic = ml_collections.ConfigDict(
        {"num_examples": 1024, "image_shape": (32, 32, 3), "num_classes": 10, "seed": 0}
    )

    c.model = ml_collections.ConfigDict()
    c.model.name = "cifar_resnet"  # any name in cnnlab.models.available()
    # model fields; zero_init_residual: each residual block starts as its shortcut (Goyal et al.)
    c.model.kwargs = ml_collections.ConfigDict(
        {"depth": 20, "skip": True, "zero_init_residual": False}
    )
    c.model.binary = False  # two classes -> one sigmoid logit

    # A budget-aware recipe: the ResNet paper's lr 0.1 at batch 128, scaled linearly to the batch
    # (Goyal et al. 2017), a linear warm-up, then cosine decay to 0 over exactly train.steps
    # (Li et al. 2020, "Budgeted Training"). The paper's own step schedule is 'step' (see
    # resnet_cifar10_paper.py); at a few hundred steps it leaves deep nets at chance.
    c.optim = ml_collections.ConfigDict()
    c.optim.optimizer = "sgd"  # 'sgd' (momentum) or 'adamw'
    c.optim.lr = 0.1  # peak lr at lr_batch examples per step
    c.optim.lr_batch = 128  # lr scales by data.batch_size / lr_batch (0 = use lr as it is)
    c.optim.momentum = 0.9  # sgd: heavy-ball momentum (optax.sgd); adamw: unused
    c.optim.nesterov = False  # sgd: Nesterov momentum
    c.optim.weight_decay = 1e-4  # decoupled from the loss (optax), on weight_decay_on params
    c.optim.weight_decay_on = "kernels"  # conv/dense kernels, not biases or BN (or 'all')
    c.optim.schedule = "cosine"  # 'cosine' / 'linear' (to 0 at train.steps), 'step', 'constant'
    c.optim.step_boundaries = (0.5, 0.75)  # 'step': /10 at these fractions of train.steps
    c.optim.warmup_steps = 15  # before the schedule; 0 = none
    c.optim.warmup = "linear"  # 'linear' from 0, or 'constant' at warmup_factor·lr (ResNet-110)
    c.optim.warmup_factor = 0.1  # 'constant' warm-up only

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.0  # of the final head's cross-entropy targets (Szegedy 2016)
    c.loss.side_taps = ()  # named features to attach side heads to, e.g. ('stage1', 'stage2')
    # 'linear' (pool -> dense), 'googlenet' (the paper's sizes: +13.1M parameters at stage1 of
    # ResNet-20) or 'googlenet_scaled' (the paper's proportions for the tap's map: +9,042 there)
    c.loss.side_head = "linear"
    c.loss.side_weight = 0.3  # GoogLeNet's weight
    c.loss.side_schedule = "constant"  # 'constant', 'linear' (DSN decay), 'threshold', 'drop'
    c.loss.side_gamma = 0.0  # threshold: a side term stops counting below this loss
    c.loss.side_drop_step = 0  # drop: side terms stop counting at this step
    # What each side head learns from: 'ce' (the labels), 'hinge' (DSN's squared hinge on the
    # labels), 'distill' (BYOT, Zhang et al. 2019: (1 - alpha) CE + alpha T^2 KL to the final
    # head's softened outputs + side_hint x the squared distance from an adapter on the side
    # head's input to side_hint_target; the final head and feature are teachers, no gradient
    # flows into them through these terms). alpha, T, lambda: mmrazor's BYOT config for CIFAR-100
    # as its code applies them (the paper states the form, not these values); BYOT weighs each
    # side term 1 (side_weight).
    c.loss.side_loss = "ce"
    c.loss.side_alpha = 0.3  # distill: the soft targets' share, in [0, 1]
    c.loss.side_temperature = 3.0  # distill: > 0
    # distill: lambda (0 = no hint adapter). mmrazor's BYOT config writes L2Loss(normalize=False,
    # mult=0.03), but its L2Loss applies `mult` only when normalising: the term it trains with is
    # loss_weight (1.0) x the per-example squared distance averaged over the batch, this form
    c.loss.side_hint = 1.0
    c.loss.side_hint_target = "pre_logits"  # distill: the feature hints match (pooled if a map)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 300  # the budget: schedules decay to 0 at this step
    c.train.eval_every = 100  # also the checkpoint interval
    c.train.log_every = 10  # training metrics to metrics.jsonl / TensorBoard every N steps
    c.train.keep_checkpoints = 3  # the last N, plus the best by best_metric
    c.train.best_metric = "accuracy"  # kept besides the last N; 'val_loss' with a val split
    c.train.best_mode = "max"  # 'max' for accuracies, 'min' for losses
    c.train.patience = 0  # early stopping: evals without a val-loss drop of min_delta (0 = off)
    c.train.min_delta = 0.0  # early stopping: the val-loss drop that counts as better
    c.train.compute_dtype = "float32"  # 'bfloat16': mixed precision (f32 params)
    # > 0 (e.g. 0.999): also evaluate a moving average of the weights (`ema/...` metrics), its
    # BN statistics recomputed over the train_subset images
    c.train.ema_decay = 0.0
    # After the last step: eval-mode metrics on the first train_subset training images, and with
    # precise_bn also metrics with BN statistics recomputed over them (Wu & Johnson 2021)
    c.train.train_subset = 512  # 0 = off
    c.train.precise_bn = False  # see train_subset: PreciseBN metrics after the last step
    return c
