"""Each source architecture as a cnnlab model, and the name of every source weight in it.

A source (`torchvision/resnet50`, `keras/ResNet50`, ...) is a registry model with the fields
that make it compute what the source computes:
- torchvision: `padding='SYMMETRIC'` (PyTorch pads a strided 3x3 by 1 on both sides where
  'SAME' pads bottom/right only); EfficientNet-B5..B7 BatchNorm epsilon 1e-3 (B0-B4 1e-5).
- Keras ResNet50 is the original v1: `stride_in_1x1=True`, BatchNorm epsilon 1.001e-5, and every
  conv has a bias. A bias before a BatchNorm only shifts its input, so it is folded into the
  running mean (mean - bias): exact in evaluation, and in training the batch mean absorbs it.
- Keras MobileNetV2: 'SAME' padding (its ZeroPadding2D + 'valid' pads the same way), BatchNorm
  epsilon 1e-3; its top ends in a softmax, cnnlab's in logits (softmax them to compare).

`rename(key)` maps one source weight name to (collection, path in the cnnlab variables, how the
array changes); None for a name the architecture does not have.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cnnlab.layers.porting import from_keras
from cnnlab.models.efficientnet import B0_STAGES
from cnnlab.models.mobilenet import V2_STAGES

Target = tuple[str, tuple[str, ...], Callable[[np.ndarray], np.ndarray]]


def _same(a):
    return a


def _conv(a):  # torch (O, I, kh, kw) -> HWIO
    return a.transpose(2, 3, 1, 0)


def _dense(a):  # torch Linear (out, in) -> (in, out)
    return a.T


@dataclass(frozen=True)
class Source:
    """One pretrained architecture: the registry model and its fields, where its weights come
    from, and how it wants its images (`cnnlab.pretrained.preprocess`)."""

    arch: str  # 'torchvision/resnet50'
    model: str  # registry name
    kwargs: dict
    rename: Callable[[str], Target | None]
    num_classes: int = 1000
    resolution: int = 224  # what the weights were trained at (resize to ~1.14x, crop this)
    resize: int = 256
    interpolation: str = "bilinear"
    mode: str = "torch"  # 'torch' (RGB, ImageNet mean/std), 'caffe' (BGR - mean), 'tf' ([-1, 1])
    files: dict = field(default_factory=dict)  # published files: {weights: (url, resize)}
    keras_order: tuple = ()  # Keras: the layers with weights in `model.layers` order


# ---------------------------------------------------------------------------- torchvision


def _torch_bn(prefix: str, key: str, path: tuple[str, ...]) -> Target | None:
    leaf = key[len(prefix) + 1 :]
    if leaf in ("weight", "bias"):
        return ("params", (*path, "scale" if leaf == "weight" else "bias"), _same)
    if leaf in ("running_mean", "running_var"):
        return ("batch_stats", (*path, leaf.removeprefix("running_")), _same)
    return None


def _torch_layer(key: str, table: list[tuple[str, tuple[str, ...], str]]) -> Target | None:
    """Match `key` against (regex prefix, cnnlab path, kind) rows; kind conv / bn / dense."""
    for pattern, path, kind in table:
        m = re.fullmatch(pattern + r"\.(weight|bias|running_mean|running_var)", key)
        if not m:
            continue
        groups = m.groups()[:-1]
        path = tuple(p.format(*groups) for p in path)
        leaf = m.groups()[-1]
        if kind == "bn":
            return _torch_bn(key[: -len(leaf) - 1], key, path)
        if leaf == "weight":
            return ("params", (*path, "kernel"), _dense if kind == "dense" else _conv)
        if leaf == "bias":
            return ("params", (*path, "bias"), _same)
    return None


def _block_index(repeats: list[int]) -> dict[int, tuple[int, int]]:
    """Flat block number (1-based, as torchvision's `features.N`) -> (stage, block) 1-based."""
    out, n = {}, 1
    for s, r in enumerate(repeats, start=1):
        for b in range(1, r + 1):
            out[n] = (s, b)
            n += 1
    return out


def _resnet_rename(key: str) -> Target | None:
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(.*)", key)
    if m:  # layerI.J.<rest> -> stageI_block(J+1)/<rest>
        block = f"stage{m[1]}_block{int(m[2]) + 1}"
        return _torch_layer(
            m[3],
            [
                (r"conv(\d)", (block, "conv{0}"), "conv"),
                (r"bn(\d)", (block, "norm{0}"), "bn"),
                (r"downsample\.0", (block, "proj_conv"), "conv"),
                (r"downsample\.1", (block, "proj_norm"), "bn"),
            ],
        )
    return _torch_layer(
        key,
        [
            (r"conv1", ("stem_conv",), "conv"),
            (r"bn1", ("stem_norm",), "bn"),
            (r"fc", ("head",), "dense"),
        ],
    )


_V2_BLOCKS = _block_index([n for _, _, n, _ in V2_STAGES])


def _mobilenet_v2_rename(key: str) -> Target | None:
    m = re.fullmatch(r"features\.(\d+)\.conv\.(.*)", key)
    if m and int(m[1]) in _V2_BLOCKS:
        s, b = _V2_BLOCKS[int(m[1])]
        block = f"stage{s}_block{b}"
        if int(m[1]) == 1:  # expansion 1: no expand conv
            rows = [
                (r"0\.0", (block, "depthwise"), "conv"),
                (r"0\.1", (block, "depthwise_norm"), "bn"),
                (r"1", (block, "project"), "conv"),
                (r"2", (block, "project_norm"), "bn"),
            ]
        else:
            rows = [
                (r"0\.0", (block, "expand"), "conv"),
                (r"0\.1", (block, "expand_norm"), "bn"),
                (r"1\.0", (block, "depthwise"), "conv"),
                (r"1\.1", (block, "depthwise_norm"), "bn"),
                (r"2", (block, "project"), "conv"),
                (r"3", (block, "project_norm"), "bn"),
            ]
        return _torch_layer(m[2], rows)
    return _torch_layer(
        key,
        [
            (r"features\.0\.0", ("stem_conv",), "conv"),
            (r"features\.0\.1", ("stem_norm",), "bn"),
            (r"features\.18\.0", ("head_conv",), "conv"),
            (r"features\.18\.1", ("head_norm",), "bn"),
            (r"classifier\.1", ("head",), "dense"),
        ],
    )


def _efficientnet_rename(key: str) -> Target | None:
    m = re.fullmatch(r"features\.([1-7])\.(\d+)\.block\.(.*)", key)
    if m:
        s, b = int(m[1]), int(m[2]) + 1
        block = f"stage{s}_block{b}"
        expand = B0_STAGES[s - 1][0] != 1
        names = (["expand"] if expand else []) + ["depthwise", "se", "project"]
        rows = []
        for i, name in enumerate(names):
            if name == "se":
                rows += [(rf"{i}\.fc1", (block, "se", "reduce"), "conv"),
                         (rf"{i}\.fc2", (block, "se", "expand"), "conv")]  # fmt: skip
            else:
                rows += [(rf"{i}\.0", (block, name), "conv"),
                         (rf"{i}\.1", (block, f"{name}_norm"), "bn")]  # fmt: skip
        return _torch_layer(m[3], rows)
    return _torch_layer(
        key,
        [
            (r"features\.0\.0", ("stem_conv",), "conv"),
            (r"features\.0\.1", ("stem_norm",), "bn"),
            (r"features\.8\.0", ("head_conv",), "conv"),
            (r"features\.8\.1", ("head_norm",), "bn"),
            (r"classifier\.1", ("head",), "dense"),
        ],
    )


# ---------------------------------------------------------------------------------- Keras

_KERAS_BN = {
    "gamma": ("params", "scale"),
    "beta": ("params", "bias"),
    "moving_mean": ("batch_stats", "mean"),
    "moving_variance": ("batch_stats", "var"),
}


def _keras_rename(layers: dict[str, tuple[str, ...]]):
    """A rename for Keras names '<layer>/<variable>' given {keras layer: cnnlab path}."""

    def rename(key: str) -> Target | None:
        layer, _, var = key.rpartition("/")
        if layer not in layers:
            return None
        path = layers[layer]
        if var in _KERAS_BN:
            col, leaf = _KERAS_BN[var]
            return (col, (*path, leaf), _same)
        if path[-1] == "depthwise" and var in ("kernel", "depthwise_kernel"):  # Keras 3, 2
            return ("params", (*path, "kernel"), lambda a: from_keras("DepthwiseConv2D", a))
        if var in ("kernel", "bias"):
            return ("params", (*path, var), _same)
        return None

    return rename


def _keras_resnet50_layers() -> dict[str, tuple[str, ...]]:
    out = {"conv1_conv": ("stem_conv",), "conv1_bn": ("stem_norm",), "predictions": ("head",)}
    for s, n in enumerate((3, 4, 6, 3), start=1):
        for b in range(1, n + 1):
            block = f"stage{s}_block{b}"
            for k in (1, 2, 3):
                out[f"conv{s + 1}_block{b}_{k}_conv"] = (block, f"conv{k}")
                out[f"conv{s + 1}_block{b}_{k}_bn"] = (block, f"norm{k}")
            if b == 1:
                out[f"conv{s + 1}_block{b}_0_conv"] = (block, "proj_conv")
                out[f"conv{s + 1}_block{b}_0_bn"] = (block, "proj_norm")
    return out


def _keras_mobilenet_v2_layers() -> dict[str, tuple[str, ...]]:
    out = {"Conv1": ("stem_conv",), "bn_Conv1": ("stem_norm",), "Conv_1": ("head_conv",),
           "Conv_1_bn": ("head_norm",), "predictions": ("head",),
           "expanded_conv_depthwise": ("stage1_block1", "depthwise"),
           "expanded_conv_depthwise_BN": ("stage1_block1", "depthwise_norm"),
           "expanded_conv_project": ("stage1_block1", "project"),
           "expanded_conv_project_BN": ("stage1_block1", "project_norm")}  # fmt: skip
    for n, (s, b) in _V2_BLOCKS.items():
        if n == 1:
            continue
        block = f"stage{s}_block{b}"
        for part in ("expand", "depthwise", "project"):
            out[f"block_{n - 1}_{part}"] = (block, part)
            out[f"block_{n - 1}_{part}_BN"] = (block, f"{part}_norm")
    return out


def _keras_resnet50_order() -> list[str]:
    """Keras' ResNet50 layers with weights in `model.layers` order (the graph's topological
    order: in a block with a projection, 0_conv comes after 2_bn)."""
    out = ["conv1_conv", "conv1_bn"]
    for s, n in enumerate((3, 4, 6, 3), start=2):
        for b in range(1, n + 1):
            p = f"conv{s}_block{b}_"
            out += [p + "1_conv", p + "1_bn", p + "2_conv", p + "2_bn"]
            out += [p + x for x in (("0_conv", "3_conv", "0_bn", "3_bn") if b == 1 else
                                    ("3_conv", "3_bn"))]  # fmt: skip
    return [*out, "predictions"]


def _keras_mobilenet_v2_order() -> list[str]:
    out = ["Conv1", "bn_Conv1"]
    for part in ("depthwise", "project"):
        out += [f"expanded_conv_{part}", f"expanded_conv_{part}_BN"]
    for n in range(1, 17):
        for part in ("expand", "depthwise", "project"):
            out += [f"block_{n}_{part}", f"block_{n}_{part}_BN"]
    return [*out, "Conv_1", "Conv_1_bn", "predictions"]


def _keras_class(layer: str) -> str:
    """The Keras layer class of an applications layer, from its name, as Keras 3 names it in a
    .weights.h5 (snake case)."""
    if layer.lower().endswith(("_bn", "bn_conv1")):
        return "batch_normalization"
    if layer.endswith("depthwise"):
        return "depthwise_conv2d"
    return "dense" if layer == "predictions" else "conv2d"


# Keras 3 `.weights.h5` names variables by position
KERAS3_VARS = {
    "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "conv2d": ("kernel", "bias"),
    "depthwise_conv2d": ("kernel", "bias"),
    "dense": ("kernel", "bias"),
}


def keras3_names(order: list[str]) -> dict[str, str]:
    """Keras 3's `.weights.h5` layer keys ('conv2d', 'conv2d_1', 'batch_normalization', ...:
    the class's snake-case name numbered by its place among the model's layers of that class)
    -> the applications' layer names, for a model whose layers come in `order`."""
    seen: dict[str, int] = {}
    out = {}
    for layer in order:
        cls = _keras_class(layer)
        k = seen[cls] = seen.get(cls, -1) + 1
        out[cls if k == 0 else f"{cls}_{k}"] = layer
    return out


def fold_conv_bias(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras ResNet50's conv biases, each folded into the BatchNorm after it: BN(conv + b) with
    running mean m equals BN(conv) with running mean m - b (in training the batch mean absorbs
    b). A bias without a BatchNorm after it (the dense head) is kept."""
    out = dict(weights)
    for key in list(out):
        if key.endswith("_conv/bias") and f"{key[: -len('_conv/bias')]}_bn/moving_mean" in out:
            mean = f"{key[: -len('_conv/bias')]}_bn/moving_mean"
            out[mean] = out[mean] - out.pop(key)
    return out


# torchvision's published files (torchvision.models.*_Weights: url, resize, crop, interpolation),
# read from torchvision 0.28; each file name ends in the first 8 hex digits of its SHA-256
_TV = "https://download.pytorch.org/models/"
TORCHVISION_FILES = {
    "resnet18": {"IMAGENET1K_V1": ("resnet18-f37072fd.pth", 256)},
    "resnet34": {"IMAGENET1K_V1": ("resnet34-b627a593.pth", 256)},
    "resnet50": {"IMAGENET1K_V1": ("resnet50-0676ba61.pth", 256),
                 "IMAGENET1K_V2": ("resnet50-11ad3fa6.pth", 232)},
    "resnet101": {"IMAGENET1K_V1": ("resnet101-63fe2227.pth", 256),
                  "IMAGENET1K_V2": ("resnet101-cd907fc2.pth", 232)},
    "resnet152": {"IMAGENET1K_V1": ("resnet152-394f9c45.pth", 256),
                  "IMAGENET1K_V2": ("resnet152-f82ba261.pth", 232)},
    "mobilenet_v2": {"IMAGENET1K_V1": ("mobilenet_v2-b0353104.pth", 256),
                     "IMAGENET1K_V2": ("mobilenet_v2-7ebf99e0.pth", 232)},
    "efficientnet_b0": {"IMAGENET1K_V1": ("efficientnet_b0_rwightman-7f5810bc.pth", 256)},
    "efficientnet_b1": {"IMAGENET1K_V1": ("efficientnet_b1_rwightman-bac287d4.pth", 256)},
    "efficientnet_b2": {"IMAGENET1K_V1": ("efficientnet_b2_rwightman-c35c1473.pth", 288)},
    "efficientnet_b3": {"IMAGENET1K_V1": ("efficientnet_b3_rwightman-b3899882.pth", 320)},
    "efficientnet_b4": {"IMAGENET1K_V1": ("efficientnet_b4_rwightman-23ab8bcd.pth", 384)},
    "efficientnet_b5": {"IMAGENET1K_V1": ("efficientnet_b5_lukemelas-1a07897c.pth", 456)},
    "efficientnet_b6": {"IMAGENET1K_V1": ("efficientnet_b6_lukemelas-24a108a5.pth", 528)},
    "efficientnet_b7": {"IMAGENET1K_V1": ("efficientnet_b7_lukemelas-c5b4e57e.pth", 600)},
}  # fmt: skip
EFFICIENTNET_CROP = {"b0": 224, "b1": 240, "b2": 288, "b3": 300, "b4": 380, "b5": 456,
                     "b6": 528, "b7": 600}  # fmt: skip


def _sources() -> dict[str, Source]:
    sym = {"padding": "SYMMETRIC"}
    out = {}
    for name, files in TORCHVISION_FILES.items():
        urls = {w: (_TV + f, resize) for w, (f, resize) in files.items()}
        if name.startswith("resnet"):
            out[f"torchvision/{name}"] = Source(f"torchvision/{name}", name, sym, _resnet_rename,
                                                files=urls)  # fmt: skip
        elif name == "mobilenet_v2":
            out[f"torchvision/{name}"] = Source(f"torchvision/{name}", name, sym,
                                                _mobilenet_v2_rename, files=urls)  # fmt: skip
        else:
            b = name.removeprefix("efficientnet_")
            kwargs = {**sym, **({"bn_epsilon": 1e-3} if b in ("b5", "b6", "b7") else {})}
            out[f"torchvision/{name}"] = Source(
                f"torchvision/{name}", name, kwargs, _efficientnet_rename,
                resolution=EFFICIENTNET_CROP[b], resize=files["IMAGENET1K_V1"][1],
                interpolation="bicubic", files=urls,
            )  # fmt: skip
    out["keras/ResNet50"] = Source(
        "keras/ResNet50", "resnet50", {"stride_in_1x1": True, "bn_epsilon": 1.001e-5},
        _keras_rename(_keras_resnet50_layers()), resize=224, mode="caffe",
        keras_order=tuple(_keras_resnet50_order()),
    )  # fmt: skip
    out["keras/MobileNetV2"] = Source(
        "keras/MobileNetV2", "mobilenet_v2", {"bn_epsilon": 1e-3},
        _keras_rename(_keras_mobilenet_v2_layers()), resize=224, mode="tf",
        keras_order=tuple(_keras_mobilenet_v2_order()),
    )  # fmt: skip
    return out


SOURCES = _sources()
