"""Fine-tune an ImageNet backbone (torchvision or Keras weights) on your own prepared images.

    ./run python -m cnnlab.data.prepare folder --name=pets --source=ROOT --image_size=256
    ./run python -m experiments.finetune --config=experiments/configs/finetune_pretrained.py \
        --config.finetune.source=torchvision/resnet50:resnet50-0676ba61.pth \
        --config.data.name=pets --workdir=runs/pets

The study notes' recipe (Keras' `ResNet50(weights='imagenet', include_top=False)`, frozen, a new
head, then the last layers unfrozen at a lower learning rate) with cnnlab's two phases. The
source sets the model (config.model is replaced by the source's: cnnlab.pretrained.SOURCES),
the input size (data.image_size 0 -> the weights' resolution, 224 for the ResNets) and the
input normalisation (ImageNet mean/std for torchvision; Keras' own for keras/*). Keys as
finetune.py.
"""

from experiments.configs import finetune


def get_config():
    c = finetune.get_config()
    c.data.name = ""  # the name you gave `cnnlab.data.prepare folder --name=...`
    c.data.batch_size = 32
    c.data.image_size = 0  # 0: the source's resolution
    c.data.val_per_class = 0  # small folders: every image trains; best = last
    c.train.best_metric, c.train.best_mode, c.train.patience = "accuracy", "max", 0
    c.train.eval_every = 50
    c.finetune.source = ""  # 'torchvision/<name>:PATH' or 'keras/<Name>:PATH'
    c.finetune.bn = "frozen"  # BatchNorm keeps ImageNet's statistics (as Keras' trainable=False)
    c.optim.weight_decay = 1e-4
    c.phase1.update(steps=100, lr=0.01, backbone_lr=0.0, unfreeze_last=0)  # the new head
    c.phase2.update(steps=100, lr=0.001, backbone_lr=0.0001, unfreeze_last=1)  # + the last block
    c.study.scratch = False
    return c
