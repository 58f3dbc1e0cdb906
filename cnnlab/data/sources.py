"""Datasets by name: the embedded digits, synthetic images, or any TFDS dataset in array_record.

TFDS datasets are read with `tfds.data_source` (random access, no TensorFlow) from `data_dir`, a
local path or `gs://...` (needs `gcsfs`). Nothing is ever downloaded here: a dataset that is not
prepared is a `DataError` that says how to prepare it.
"""

import dataclasses
import threading
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.catalogue import (
    DEFAULT_SPEC,
    SPECS,
    DatasetSpec,
    default_data_dir,
    how_to_prepare,
    prepared,
)
from cnnlab.data.synthetic import SyntheticSource
from cnnlab.errors import DataError


@dataclasses.dataclass
class Dataset:
    name: str
    train: Any  # random-access source: len(src), src[i] -> {'image', 'label'}
    test: Any
    num_classes: int
    image_shape: tuple[int, int, int]
    spec: DatasetSpec
    val: Any = None  # a validation split (held out of train by `data.subset`), if any
    class_names: tuple[str, ...] = ()  # label k's name, where the data has names


# decoded examples this process keeps in memory, over all splits it opened: a short run reads
# each example once or twice anyway, and a grid's cells, epochs and evaluations re-read them
CACHE_BYTES = 512 * 2**20


class Cached:
    """A stored split that keeps each example it decodes, read-only, while this process's
    cache holds under CACHE_BYTES: later epochs, evaluations and runs of this process read
    memory instead of decoding the file again (~0.15 ms an example through TFDS)."""

    used, _lock = 0, threading.Lock()

    def __init__(self, source):
        self.source, self.kept = source, {}

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i) -> dict:
        i = int(i)
        example = self.kept.get(i)
        if example is None:
            example = self.source[i]
            size = sum(np.asarray(v).nbytes for v in example.values())
            with Cached._lock:
                keep = Cached.used + size <= CACHE_BYTES
                Cached.used += size if keep else 0
            if keep:
                for v in example.values():
                    if isinstance(v, np.ndarray):
                        v.flags.writeable = False  # shared by every reader from now on
                self.kept[i] = example
        return example


_OPENED: dict = {}  # (prepared folder, its dataset_info.json's mtime) -> (splits, info)


def _tfds(name: str, data_dir: str):
    """-> ({split: Cached source}, info) of the newest prepared version; opened once per
    process (a re-prepared folder is opened again)."""
    found = prepared(name, data_dir)
    if not found:
        raise DataError(how_to_prepare(name, data_dir))
    # read the prepared folder itself (newest version): by name, TFDS would pick its own
    # registered builder of that name and version even for data cnnlab.data.prepare wrote
    import tensorflow_datasets as tfds

    folder = max(found, key=lambda d: tfds.core.Version(Path(d).name))
    info_file = Path(folder) / "dataset_info.json"
    key = (str(folder), info_file.stat().st_mtime_ns if info_file.exists() else None)
    if key in _OPENED:
        return _OPENED[key]
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
    _OPENED[key] = {k: Cached(v) for k, v in sources.items()}, builder.info
    return _OPENED[key]


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
    # imported here, not at the top: `python -m cnnlab.data.prepare` runs that module as
    # __main__, and runpy warns when its package has imported it already
    from cnnlab.data import prepare

    prepare.on_first_use(name, data_dir)
    sources, info = _tfds(name, data_dir)
    spec = _spec(name, info)
    label = info.features["label"]
    shape = tuple(info.features["image"].shape)
    if None in shape:  # variable-size images (imagenette, imagenet): a resize is needed
        shape = tuple(np.asarray(sources["train"][0]["image"]).shape)
    names = tuple(getattr(label, "names", None) or ())
    return Dataset(name, sources["train"], sources["test"], label.num_classes, shape, spec,
                   class_names=names)  # fmt: skip
