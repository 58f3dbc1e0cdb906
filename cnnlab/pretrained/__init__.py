"""Pretrained ImageNet backbones from torchvision and Keras files, as cnnlab models.

    model, variables = pretrained.load("torchvision/resnet50", "resnet50-0676ba61.pth")
    logits, taps = model.apply(variables, pretrained.preprocess("torchvision/resnet50", images))

    # the study notes' ResNet50(weights='imagenet', include_top=False, pooling='avg'):
    h5 = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    model, variables = pretrained.load("keras/ResNet50", h5, include_top=False)
    features, taps = model.apply(variables, x)          # (B, 2048)

    # a new 5-way head on the loaded backbone (initialised as cnnlab initialises heads):
    model, variables = pretrained.load("torchvision/resnet18", path, num_classes=5)

`load` reads the file without PyTorch or TensorFlow (`formats`: a torch.save zip through a
restricted unpickler, .safetensors, Keras .h5 / .weights.h5), puts every weight where the cnnlab
model has it (`archs`: names, layouts, the fields that make the model compute what the source
does) and refuses a file that does not fit: a weight the architecture lacks, one it lacks in the
file, or a shape that differs is one line naming the weight and both shapes. What `apply`
returns, with `train=False`, equals the source's output on the same images
(tests/test_pretrained.py: max |difference| <= 1e-4 x max(1, max |output|) in float32 on CPU,
for every arch in SOURCES).
"""

import flax.linen as nn
import flax.traverse_util as tu
import jax
import jax.numpy as jnp
import numpy as np

from cnnlab import models
from cnnlab.pretrained import formats
from cnnlab.pretrained.archs import KERAS3_VARS, SOURCES, Source, fold_conv_bias, keras3_names
from cnnlab.pretrained.formats import WeightsError
from cnnlab.pretrained.preprocess import preprocess

__all__ = ["SOURCES", "WeightsError", "load", "normalisation", "preprocess", "source",
           "split_source"]  # fmt: skip


def source(arch: str) -> Source:
    """The Source named `arch` ('torchvision/resnet50', 'keras/ResNet50', ...)."""
    if arch not in SOURCES:
        raise WeightsError(f"unknown pretrained arch {arch!r}; choose one of {sorted(SOURCES)}")
    return SOURCES[arch]


def _weights(src: Source, path) -> dict[str, np.ndarray]:
    kind, weights = formats.read(path)
    family = src.arch.split("/")[0]
    if family == "torchvision" and kind.startswith("keras"):
        raise WeightsError(f"{path}: a Keras file; load it as one of "
                           f"{[a for a in SOURCES if a.startswith('keras/')]}")  # fmt: skip
    if family == "keras" and not kind.startswith("keras"):
        raise WeightsError(f"{path}: a PyTorch-style file ({kind}); load it as one of "
                           f"{[a for a in SOURCES if a.startswith('torchvision/')]}")  # fmt: skip
    if kind == "keras3_weights_h5":
        weights = _keras3(src, weights, path)
    if family == "keras":
        weights = fold_conv_bias(weights)
    return {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}


def _keras3(src: Source, weights: dict, path) -> dict[str, np.ndarray]:
    """A Keras 3 .weights.h5's '<class>_<n>/<i>' keys as the applications' '<layer>/<var>'."""
    layers = keras3_names(list(src.keras_order))
    out = {}
    for key, v in weights.items():
        cls_n, i = key.rsplit("/", 1)
        if cls_n not in layers:
            raise WeightsError(f"{path}: layer {cls_n!r} of this Keras 3 file has no place in "
                               f"{src.arch}; is the file for another architecture?")  # fmt: skip
        cls = cls_n if cls_n in KERAS3_VARS else cls_n.rsplit("_", 1)[0]
        out[f"{layers[cls_n]}/{KERAS3_VARS[cls][int(i)]}"] = v
    return out


def load(arch: str, path, *, num_classes: int | None = None, include_top: bool = True,
         seed: int = 0, rgb_stem: bool = False):  # fmt: skip
    """(model, variables) of a pretrained `arch` from the weight file at `path`.

    include_top=True, num_classes=None: the source's classifier (1000 ImageNet logits).
    include_top=False: no head; `apply` gives the pooled features (Keras' `pooling='avg'`).
    num_classes=N: a new N-way head, initialised from `seed` as cnnlab initialises heads, on
    the loaded backbone (the file's classifier is not used).
    rgb_stem=True (Keras 'caffe' sources: ResNet50): the stem conv reads RGB where the source
    read BGR (its kernel's input channels reversed), for cnnlab's RGB data pipeline."""
    src = source(arch)
    if num_classes is not None and not include_top:
        raise WeightsError("num_classes needs include_top=True: a new head on the backbone")
    new_head = num_classes is not None and num_classes != src.num_classes
    classes = src.num_classes if num_classes is None else num_classes
    model = models.create(src.model, num_classes=classes if include_top else 0, **src.kwargs)
    r = src.resolution
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, r, r, 3)))
    want = tu.flatten_dict(shapes)  # ('params' | 'batch_stats', *path) -> shape
    got: dict[tuple[str, ...], jax.Array] = {}
    weights = _weights(src, path)
    for key in list(weights):  # each source array freed once converted: ~1 copy at a time
        array = weights.pop(key)
        target = src.rename(key)
        if target is None:
            raise WeightsError(
                f"{path}: weight {key!r} {tuple(array.shape)} has no place in {arch}; is the "
                f"file for another architecture?"
            )
        col, where, change = target
        if where[0] == "head" and (new_head or not include_top):
            continue  # the source's classifier, replaced or left out
        if (col, *where) not in want:
            raise WeightsError(f"{path}: weight {key!r} {tuple(array.shape)} maps to "
                               f"{'/'.join((col, *where))}, which {arch} lacks")  # fmt: skip
        value = np.asarray(change(array), np.float32)
        shape = tuple(want[(col, *where)].shape)
        if value.shape != shape:
            raise WeightsError(
                f"{path}: weight {key!r} has shape {tuple(array.shape)} ({value.shape} here), "
                f"but {arch}'s {'/'.join((col, *where))} is {shape}; is the file for another "
                f"architecture or width?"
            )
        got[(col, *where)] = jnp.asarray(value)
        del array, value
    head = {k for k in want if k[1] == "head"} if new_head else set()
    if missing := [k for k in want if k not in got and k not in head]:
        raise WeightsError(
            f"{path}: no weight for {arch}'s {'/'.join(missing[0])} "
            f"{tuple(want[missing[0]].shape)} ({len(missing)} missing); is the file complete "
            f"and for this architecture?"
        )
    if head:
        c = want[("params", "head", "kernel")].shape[0]
        init = nn.Dense(classes).init(jax.random.key(seed), jnp.zeros((1, c)))["params"]
        got.update({("params", "head", k): v for k, v in init.items()})
    if rgb_stem and src.mode == "caffe":
        got[("params", "stem_conv", "kernel")] = got[("params", "stem_conv", "kernel")][:, :, ::-1]
    return model, tu.unflatten_dict(got)


def split_source(text: str) -> tuple[Source, str] | None:
    """'torchvision/resnet50:PATH' (config.finetune.source) -> (Source, PATH); None for text
    that names no pretrained arch (a cnnlab run directory)."""
    arch, sep, path = str(text).partition(":")
    if not sep or "/" not in arch or arch.split("/")[0] not in ("torchvision", "keras"):
        return None
    if not path:
        raise WeightsError(f"{text!r}: give the weights file after the arch, '{arch}:PATH'")
    return source(arch), path


def normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of x / 255 that reproduce the source's preprocessing in cnnlab's data
    pipeline (which computes (x / 255 - mean) / std per RGB channel): ImageNet's for
    torchvision; [-1, 1] for Keras 'tf'; for Keras 'caffe' the mean pixel (in RGB order) with
    std 1/255, where the BGR order is taken care of by `load(..., rgb_stem=True)` (the stem
    conv's input channels reversed)."""
    from cnnlab.pretrained.preprocess import CAFFE_MEAN_BGR, MEAN, STD

    mode = source(arch).mode
    if mode == "torch":
        return tuple(MEAN.tolist()), tuple(STD.tolist())
    if mode == "tf":
        return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    return tuple((CAFFE_MEAN_BGR[::-1] / 255).tolist()), (1 / 255,) * 3
