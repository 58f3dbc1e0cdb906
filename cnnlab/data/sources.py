"""Datasets by name: the embedded digits, synthetic images, or any TFDS dataset in array_record.

TFDS datasets are read with `tfds.data_source` (random access, no TensorFlow) from `data_dir`, a
local path or `gs://...` (needs `gcsfs`). Nothing is ever downloaded here: a dataset that is not
prepared is a `DataError` that says how to prepare it.
"""

import dataclasses
import os
from typing import Any

import numpy as np

from cnnlab.data import digits
from cnnlab.data.synthetic import SyntheticSource


class DataError(ValueError):
    """Missing or unusable data; the message says what to do."""


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


def how_to_prepare(name: str, data_dir: str) -> str:
    return (
        f"dataset {name!r} is not prepared under data_dir={data_dir!r}. Prepare it once on a "
        f'machine with network access: python -c "import tensorflow_datasets as tfds; '
        f"tfds.builder('{name}', data_dir='{data_dir}', file_format='array_record')"
        f'.download_and_prepare()" (some datasets need TensorFlow to prepare), or pass '
        f"--config.data_dir=DIR where it is"
    )


def _tfds(name: str, data_dir: str):
    import tensorflow_datasets as tfds

    if not _prepared(name, data_dir):
        raise DataError(how_to_prepare(name, data_dir))
    try:
        sources = tfds.data_source(name, data_dir=data_dir, download=False)
        info = tfds.builder(name, data_dir=data_dir).info
    except NotImplementedError as e:  # prepared as TFRecord: needs TF and has no random access
        raise DataError(
            f"dataset {name!r} under {data_dir!r} is in TFRecord format; re-prepare it with "
            f"file_format='array_record' ({how_to_prepare(name, data_dir)})"
        ) from e
    for split in ("train", "test"):
        if split not in sources:
            raise DataError(f"dataset {name!r} has no {split!r} split; it has {sorted(sources)}")
    return sources, info


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
    sources, info = _tfds(name, data_dir)
    label = info.features["label"]
    shape = tuple(info.features["image"].shape)
    if None in shape:  # variable-size images (imagenette, imagenet): a resize is needed
        shape = tuple(np.asarray(sources["train"][0]["image"]).shape)
    return Dataset(name, sources["train"], sources["test"], label.num_classes, shape, spec)
