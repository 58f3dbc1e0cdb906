"""What datasets cnnlab knows and where prepared ones live: read by the reader (`sources`) and
the writer (`prepare`) alike, so neither imports the other's internals."""

import dataclasses
import difflib
import os
from pathlib import Path

from cnnlab.data.digits import NAME as DIGITS  # the embedded digits

FASHION_MNIST_DEBIAN = "/usr/share/datasets/fashion-mnist"  # apt-get install dataset-fashion-mnist


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """How to normalise and augment a dataset (per-channel mean/std of x / 255)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    flip: bool  # horizontal flips preserve the label (not for digits)
    crop_pad: int  # pad-and-crop augmentation padding (0: none)


SPECS = {
    DIGITS: DatasetSpec((0.3053,), (0.3759,), flip=False, crop_pad=1),
    "synthetic": DatasetSpec((0.5,), (0.25,), flip=False, crop_pad=0),
    "mnist": DatasetSpec((0.1307,), (0.3081,), flip=False, crop_pad=2),
    "fashion_mnist": DatasetSpec((0.2860,), (0.3530,), flip=True, crop_pad=2),
    "cifar10": DatasetSpec((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True, 4),
    "cifar100": DatasetSpec((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True, 4),
    "imagenette": DatasetSpec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, 0),
    "imagenet2012": DatasetSpec((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), True, 0),
}
DEFAULT_SPEC = DatasetSpec((0.5,), (0.25,), flip=False, crop_pad=0)


def default_data_dir() -> str:
    """$CNNLAB_DATA_DIR, else ~/.cache/cnnlab/tensorflow_datasets."""
    return os.environ.get("CNNLAB_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "cnnlab", "tensorflow_datasets"
    )


def prepared(name: str, data_dir: str) -> list[str]:
    from etils import epath

    root = epath.Path(data_dir) / name
    if not root.exists():
        return []
    found = [p.parent for p in root.glob("*/dataset_info.json")]
    return [str(d) for d in found if not d.name.startswith("incomplete")]  # TFDS's in-progress


def prepared_names(data_dir: str) -> list[str]:
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
    known = set(SPECS) | {"cifar100_coarse"} | set(prepared_names(data_dir))
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
