"""Model families and the registry: `create(name, **overrides)`, `available()`.

Every model is `model.apply(variables, x, train=...) -> (logits, features)`; `features` holds named
intermediates ('stem', 'stage1', ..., 'pre_logits') and, with `side_taps`, 'side_logits'.
"""

import functools

import flax.linen as nn

from cnnlab.models.efficientnet import COEFFICIENTS, EfficientNet
from cnnlab.models.generic import GenericNet
from cnnlab.models.mobilenet import MobileNetV1, MobileNetV2
from cnnlab.models.registry import (
    ModelSpec,
    available,
    create,
    defaults,
    fields,
    register,
    spec,
    unread,
)
from cnnlab.models.resnet import CifarResNet, ResNet
from cnnlab.models.scaling import compound_scale, make_divisible
from cnnlab.models.small import LeNet5, MiniXception

P = functools.partial
CIFAR = (32, 32, 3)
IMAGENET = (224, 224, 3)

# CIFAR ResNets (He et al. 2015, table 6) and their plain twins; 'cifar_resnet' takes any depth
register("cifar_resnet", CifarResNet, CIFAR, "ResNet paper section 4.2, depth 6n+2")
for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", P(CifarResNet, depth=_depth), CIFAR, "ResNet paper table 6")
    register(f"plain{_depth}", P(CifarResNet, depth=_depth, skip=False), CIFAR, "ResNet paper 4.2")

# ImageNet ResNets (He et al. 2015, table 1), counts as torchvision
for _name, _sizes, _block in (
    ("resnet18", (2, 2, 2, 2), "basic"),
    ("resnet34", (3, 4, 6, 3), "basic"),
    ("resnet50", (3, 4, 6, 3), "bottleneck"),
    ("resnet101", (3, 4, 23, 3), "bottleneck"),
    ("resnet152", (3, 8, 36, 3), "bottleneck"),
):
    register(_name, P(ResNet, stage_sizes=_sizes, block=_block), IMAGENET, f"torchvision {_name}")

register("mobilenet_v1", MobileNetV1, IMAGENET, "Keras MobileNet(alpha=1.0)")
register("mobilenet_v2", MobileNetV2, IMAGENET, "torchvision mobilenet_v2")
for _b, (_w, _d, _res, _drop) in COEFFICIENTS.items():
    register(
        f"efficientnet_{_b}",
        P(EfficientNet, width=_w, depth=_d, dropout=_drop),
        (_res, _res, 3),
        f"torchvision efficientnet_{_b}",
        fixed=("width", "depth"),  # dropout may be changed, e.g. for fine-tuning
    )
register("lenet5", LeNet5, (32, 32, 1), "LeCun et al. 1998")
register(
    "lenet5_notes",
    P(LeNet5, filters=(8, 16), pool="max", act=nn.relu),
    (32, 32, 3),
    "the notes' LeNet-5 table",
)
register("mini_xception", MiniXception, (180, 180, 3), "Deep Learning with Python 9.3.5")
register("generic", GenericNet, CIFAR, "cnnlab generic builder")

__all__ = [
    "CifarResNet",
    "EfficientNet",
    "GenericNet",
    "LeNet5",
    "MiniXception",
    "MobileNetV1",
    "MobileNetV2",
    "ModelSpec",
    "ResNet",
    "available",
    "compound_scale",
    "create",
    "defaults",
    "fields",
    "make_divisible",
    "register",
    "spec",
    "unread",
]
