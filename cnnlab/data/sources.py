"""Datasets by name: the embedded digits, synthetic images, or any TFDS dataset in array_record.

TFDS datasets are read with `tfds.data_source` (random access, no TensorFlow) from `data_dir`, a
local path or `gs://...` (needs `gcsfs`). Nothing is ever downloaded here: a dataset that is not
prepared is a `DataError` that says how to prepare it.
"""

import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data import digits
from cnnlab.data.synthetic import SyntheticSource
from cnnlab.errors import DataError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to normalise and augment a dataset (per-channel mean/std of x / 255)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips preserve the label (not for digits)
    crop_pad: int  # pad-and-crop augmentation padding (0: none)


SPECS = {
    digits.NAME: DatasetSpec((0.3053,), (0.3759,), flip=False, crop_pad=1),
    "synthetic": DatasetSpec((0.5,), (0.25,), flip=False, crop_pad=0),
    "mnist": DatasetSpec((0.1307,), (0.3081,), flip=False, crop_pad=2),
    "fashion_mnist": DatasetSpec((0.2860,), (0.3530,), flip=True, crop_pad=2),
    "cifar10": DatasetSpec((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 4),
    "cifar100": DatasetSpec((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 4),
    "imagenette": DatasetSpec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, 0),
    "imagenet2012": DatasetSpec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, 0),
}
DEFAULT_SPEC = DatasetSpec((0.5,), (0.25,), flip=False, crop_pad=0)


@dataclasses.dataclass
class Dataset:
    name: str
    train: Any  # random-access source: len(src), src[i] -> {'image', 'label'}
    test: Any
    num_classes: int
    image_shape: tuple[int, int, int]
    spec: DatasetSpec
    val: Any = None  # a validation split (held out of train by `data.subset`), if any


def default_data_dir() -> str:
    """$CNNLAB_DATA_DIR, else ~/.cache/cnnlab/tensorflow_datasets."""
    return os.environ.get("CNNLAB_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cnnlab", "tensorflow_datasets"
    )


def _prepared(name: str, data_dir: str) -> list[str]:
    from etils import epath

    root = epath.Path(data_dir) / name
    if not root.exists():
        return []
    found = [p.parent for p in root.glob("*/dataset_info.json")]
    return [str(d) for d in found if not d.name.startswith("incomplete")]  # TFDS's in-progress


def _prepared_names(data_dir: str) -> list[str]:
    root = Path(data_dir)
    return [p.name for p in root.iterdir() if p.is_dir()] if root.is_dir() else []


def how_to_prepare(name: str, data_dir: str) -> str:
    """The one-line error for a dataset that is not prepared, naming a command that works."""
    where = f"dataset {name!r} is not prepared under data_dir={data_dir!r}"
    cmd = f"python -m cnnlab.data.prepare {{}} --source={{}} --data_dir={data_dir}"
    if name == "fashion_mnist":
        return (
            f"{where}: apt-get install dataset-fashion-mnist (the official files, offline) and it "
            f"is prepared on first use, or {cmd.format(name, 'DIR_WITH_THE_4_IDX_FILES')}"
        )
    if name in ("mnist", "cifar10", "cifar100", "cifar100_coarse"):
        kind = "DIR_WITH_THE_4_IDX_FILES" if name == "mnist" else f"{name[:8]}-python.tar.gz"
        kind = kind.replace("cifar10-", "cifar-10-").replace("cifar100", "cifar-100")
        extra = " --labels=coarse" if name.endswith("coarse") else ""
        return f"{where}; prepare it: {cmd.format(name.removesuffix('_coarse'), kind)}{extra}"
    known = set(SPECS) | {"cifar100_coarse"} | set(_prepared_names(data_dir))
    close = difflib.get_close_matches(name, sorted(known), n=2, cutoff=0.75)
    if close:
        return (
            f"{where} and is no dataset cnnlab knows; did you mean "
            f"{' or '.join(map(repr, close))}? (set config.data.name)"
        )
    return (
        f"{where}; for your own images: {cmd.format('folder --name=' + name, 'ROOT')} "
        f"(ROOT/<class>/<image>); with TensorFlow installed (optional), TFDS's catalogue: "
        f"tfds.builder({name!r}, data_dir=..., file_format='array_record').download_and_prepare(); "
        f"or pass --config.data.data_dir=DIR where it is"
    )


def _tfds(name: str, data_dir: str):
    import tensorflow_datasets as tfds

    found = _prepared(name, data_dir)
    if not found:
        raise DataError(how_to_prepare(name, data_dir))
    # read the prepared folder itself (newest version): by name, TFDS would pick its own
    # registered builder of that name and version even for data cnnlab.data.prepare wrote
    folder = max(found, key=lambda d: tfds.core.Version(Path(d).name))
    try:
        builder = tfds.builder_from_directory(folder)
        sources = builder.as_data_source()
    except NotImplementedError as e:  # prepared as TFRecord: needs TF and has no random access
        raise DataError(
            f"dataset {name!r} under {data_dir!r} is in TFRecord format; re-prepare it as "
            f"array_record ({how_to_prepare(name, data_dir)})"
        ) from e
    for split in ("train", "test"):
        if split not in sources:
            raise DataError(f"dataset {name!r} has no {split!r} split; it has {sorted(sources)}")
    return sources, builder.info


def _spec(name: str, info) -> DatasetSpec:
    """Normalisation and augmentation: stored with the data by cnnlab.data.prepare, else the
    known constants, else a neutral default."""
    meta = info.metadata or {}
    if "mean" in meta and "std" in meta:
        return DatasetSpec(
            tuple(meta["mean"]),
            tuple(meta["std"]),
            bool(meta.get("flip")),
            int(meta.get("crop_pad", 0)),
        )
    return SPECS.get(name, DEFAULT_SPEC)


def load(name: str, data_dir: str | None = None, synthetic: dict | None = None) -> Dataset:
    """Open a dataset by name; `cnnlab_digits` is prepared on first use (offline)."""
    data_dir = data_dir or default_data_dir()
    spec = SPECS.get(name, DEFAULT_SPEC)
    if name == "synthetic":
        kw = dict(synthetic or {})
        n_test = kw.pop("num_test", 256)
        train = SyntheticSource(**kw)
        test = SyntheticSource(**{**kw, "num_examples": n_test, "seed": kw.get("seed", 0) + 1})
        return Dataset(name, train, test, train.num_classes, tuple(train.image_shape), spec)
    if name == digits.NAME and not _prepared(name, data_dir):
        digits.prepare(data_dir)
    if name == "fashion_mnist" and not _prepared(name, data_dir):
        from cnnlab.data import prepare

        if not Path(prepare.FASHION_MNIST_DEBIAN).is_dir():
            raise DataError(how_to_prepare(name, data_dir))
        prepare.prepare(name, prepare.FASHION_MNIST_DEBIAN, data_dir)  # offline, once
    sources, info = _tfds(name, data_dir)
    spec = _spec(name, info)
    label = info.features["label"]
    shape = tuple(info.features["image"].shape)
    if None in shape:  # variable-size images (imagenette, imagenet): a resize is needed
        shape = tuple(np.asarray(sources["train"][0]["image"]).shape)
    return Dataset(name, sources["train"], sources["test"], label.num_classes, shape, spec)
