"""Prepare datasets as TFDS array_record files without TensorFlow.

    python -m cnnlab.data.prepare mnist --source=DIR            # the 4 official IDX files
    python -m cnnlab.data.prepare fashion_mnist --source=DIR    # (default: Debian's package)
    python -m cnnlab.data.prepare cifar10 --source=cifar-10-python.tar.gz   # or its folder
    python -m cnnlab.data.prepare cifar100 --source=cifar-100-python.tar.gz [--labels=coarse]
    python -m cnnlab.data.prepare folder --name=flowers --source=ROOT [--image_size=64]

Writes DATA_DIR/<name>/1.0.0/ (default $CNNLAB_DATA_DIR or ~/.cache/cnnlab/tensorflow_datasets),
which `--config.data.name=<name> --config.data.data_dir=DATA_DIR` reads. The training split's
per-channel mean and std (of pixel / 255) and the class names are stored with the dataset. TFDS
writes into an `incomplete.*` folder and renames it when done, so a reader never finds half a
dataset. Nothing is downloaded unless `--download` asks for the official archives (checksums
verified; mnist, fashion_mnist, cifar10, cifar100).
"""

import codecs
import gzip
import hashlib
import io
import json
import pickle
import shutil
import tarfile
import warnings
from pathlib import Path

import numpy as np

from cnnlab.data import digits
from cnnlab.data.catalogue import (
    FASHION_MNIST_DEBIAN,
    SPECS,
    default_data_dir,
    how_to_prepare,
    prepared,
)
from cnnlab.errors import DataError
from cnnlab.records import write_text_atomic

VERSION = "1.0.0"
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}  # fmt: skip
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


# --- readers: each returns {split: (images uint8 (N, H, W, C), labels int64 (N,))}, class names


MAX_IDX_BYTES = 2**32  # 4 GiB of uint8: EMNIST's largest split is 0.55 GB
CHUNK = 16 * 2**20


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not): uint8 images (N, H, W) or labels (N,). Reads the header,
    then at most the bytes it announces and one more: a file that inflates beyond that (a gzip
    bomb) is refused after that many bytes, never read whole."""
    opener = gzip.open if path.suffix == ".gz" else open
    what = f"{path}: cannot read it as an IDX file{' (gzip)' * (opener is gzip.open)}"
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] != 0x08 or head[3] not in (1, 3):
                raise DataError(
                    f"{path}: not an IDX file of uint8 images or labels (magic "
                    f"{head.hex() or 'none'}, expected 00000803 or 00000801); pass the official "
                    f"MNIST-format files"
                )
            ndim = head[3]
            raw_dims = f.read(4 * ndim)
            dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            need = int(np.prod(dims, dtype=np.int64)) if len(raw_dims) == 4 * ndim else -1
            if need > MAX_IDX_BYTES:
                raise DataError(
                    f"{path}: the header says {dims} = {need} bytes of data, over the "
                    f"{MAX_IDX_BYTES} an IDX image file may hold here; not read"
                )
            parts, got = [], 0
            while need >= 0 and got <= need and (part := f.read(min(CHUNK, need + 1 - got))):
                parts.append(part)
                got += len(part)
    except (OSError, EOFError) as e:
        raise DataError(f"{what}: {e}") from None
    if got != need:
        more = "more than that (not read further)" if got > need else got
        raise DataError(
            f"{path}: truncated or padded: the header says {dims} = {need} bytes of data, the "
            f"file has {more}; fetch the file again"
        )
    return np.frombuffer(b"".join(parts), np.uint8).reshape(dims)


def _find(source: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (source / name).is_file():
            return source / name
    raise DataError(f"{source}: no {stem} or {stem}.gz; pass --source=DIR holding the 4 IDX files")


def read_mnist_like(source: Path):
    """The four official IDX files of MNIST or Fashion-MNIST in one folder."""
    splits = {}
    for split, (img, lab) in IDX_FILES.items():
        images, labels = read_idx(_find(source, img)), read_idx(_find(source, lab))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{source}: {split} images {images.shape} and labels {labels.shape} do not pair up"
            )
        splits[split] = (images[..., None], labels.astype(np.int64))
    return splits


# The only globals a CIFAR pickle may name: the official files (Python 2, protocol 2) name
# numpy's array reconstructor, ndarray and dtype (numpy 2 spells the module numpy._core). The
# same data pickled again by Python 3 names `_codecs.encode` (protocol 2 spells bytes so), and
# numpy's `_frombuffer` (protocol 5) or `scalar` (labels that became numpy integers). All of
# them build data only; any other global (a function that would run) is refused. Everything
# else in the files is a dict, list, bytes, str or int, which pickle builds without a global.
_CIFAR_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
    ("numpy.core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np._core.multiarray.scalar,
    ("numpy.core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy._core.numeric", "_frombuffer"): np._core.numeric._frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _Refused(pickle.UnpicklingError):
    pass


class _CifarUnpickler(pickle.Unpickler):
    """A pickle reader that builds only what the official CIFAR files hold: any other global
    (a function that would run, e.g. os.system) is refused before it is looked up."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_GLOBALS:
            return _CIFAR_GLOBALS[module, name]
        raise _Refused(f"{module}.{name}")


def _unpickle(blob: bytes, what: str) -> dict:
    try:
        out = _CifarUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except _Refused as e:
        raise DataError(
            f"{what}: refused: the pickle names {e}, which no CIFAR file holds (only dicts, lists, "
            f"bytes, numbers and numpy arrays), so loading it could run code; nothing was "
            f"executed: use the official archive"
        ) from None
    except Exception as e:  # a damaged or foreign file
        raise DataError(f"{what}: not a CIFAR python pickle ({type(e).__name__}: {e})") from None
    if not isinstance(out, dict):
        raise DataError(f"{what}: not a CIFAR python pickle (a {type(out).__name__}, not a dict)")
    return out


# Images per official CIFAR member; its pickle holds 3072 bytes per image plus its label and
# file name (about 31 MB per 10000). The cap allows twice the pixels: a file saved again by
# Python 3 with protocol 2 spells bytes as latin-1 text, up to 2 bytes each. Meta files: 1 MiB.
CIFAR_IMAGES = {**{f"data_batch_{i}": 10_000 for i in range(1, 6)}, "test_batch": 10_000,
                "train": 50_000, "test": 10_000}  # fmt: skip


def cifar_cap(member: str) -> int:
    n = CIFAR_IMAGES.get(member)
    return 2**20 if n is None else 2 * 3073 * n + 4 * 2**20


def _cifar_files(source: Path, wanted: list[str]) -> dict[str, bytes]:
    """{member basename: bytes} of the `wanted` members of the official tarball or its folder;
    others are not read, and one over its size cap (`cifar_cap`) is refused by name, unread."""

    def check(name: str, size: int) -> None:
        if size > cifar_cap(name):
            raise DataError(
                f"{source}: member {name} is {size} bytes, over the {cifar_cap(name)} a CIFAR "
                f"{name} can hold; refused unread (an archive bomb, or not CIFAR): pass the "
                f"official archive"
            )

    out = {}
    if source.is_file():
        try:
            with tarfile.open(source, "r|*") as tar:  # a stream: members in order, no seeking
                for m in tar:
                    name = Path(m.name).name
                    if m.isfile() and name in wanted and name not in out:
                        check(name, m.size)
                        out[name] = tar.extractfile(m).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise DataError(f"{source}: not a readable .tar.gz ({e}); fetch it again") from None
        return out
    if source.is_dir():
        for p in sorted(source.rglob("*")):
            if p.name in wanted and p.name not in out and p.is_file():
                check(p.name, p.stat().st_size)
                out[p.name] = p.read_bytes()
        return out
    raise DataError(f"--source={source} does not exist; pass the official tarball or its folder")


def read_cifar(source: Path, name: str, labels: str = "fine"):
    """CIFAR-10 or CIFAR-100 from the official python-pickle tarball or its extracted folder."""
    if name == "cifar10":
        parts = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        meta, key, names_key = "batches.meta", b"labels", b"label_names"
    else:
        parts = {"train": ["train"], "test": ["test"]}
        key = b"fine_labels" if labels == "fine" else b"coarse_labels"
        meta, names_key = "meta", b"fine_label_names" if labels == "fine" else b"coarse_label_names"
    wanted = [meta, *(m for members in parts.values() for m in members)]
    files = _cifar_files(source, wanted)
    missing = [f for f in wanted if f not in files]
    if missing:
        raise DataError(
            f"{source}: missing {missing}; pass the official {name.replace('cifar', 'cifar-')}-"
            f"python.tar.gz (or its extracted folder)"
        )
    splits = {}
    for split, members in parts.items():
        images, labs = [], []
        for m in members:
            d = _unpickle(files[m], f"{source}:{m}")
            data = np.asarray(d[b"data"], np.uint8)
            if data.ndim != 2 or data.shape[1] != 3072:
                raise DataError(f"{source}:{m}: data of shape {data.shape}, expected (N, 3072)")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labs.append(np.asarray(d[key], np.int64))
        splits[split] = (np.concatenate(images), np.concatenate(labs))
    names = [n.decode() for n in _unpickle(files[meta], f"{source}:{meta}")[names_key]]
    return splits, names


def shown(what) -> str:
    """A path or message as printable text: bytes of a non-UTF-8 file name as \\x escapes."""
    return str(what).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_image(path: Path, hw: tuple[int, int] | None = None, mode: str = "RGB") -> np.ndarray:
    """One image file as uint8 (H, W, C) in Pillow `mode` ('RGB' or 'L', then C = 1), resized
    to `hw` with the bilinear filter if given. Decoded by content, not by extension (a PNG
    named .jpg is read as a PNG); a file of more pixels than Pillow's decompression-bomb limit
    is refused, not decoded. Every failure is a one-line DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im = im.convert(mode)
                if hw:
                    im = im.resize(hw[::-1], Image.BILINEAR)
                a = np.asarray(im, np.uint8)
                return a[..., None] if a.ndim == 2 else a
    except FileNotFoundError:
        raise DataError(f"{shown(path)}: no such image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(
            f"{shown(path)}: refused as a possible decompression bomb ({e}); remove it, or "
            f"raise PIL.Image.MAX_IMAGE_PIXELS if it is a real image"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(
            f"{shown(path)}: not a readable image, or truncated ({type(e).__name__}: "
            f"{shown(e)}); remove it or fix it"
        ) from None


def read_folder(root: Path, image_size: int = 0, test_fraction: float = 0.2, seed: int = 0):
    """An ImageFolder tree root/<class>/<image>, or root/train/<class>/... + root/test/<class>/...;
    without train/ and test/ a seeded split holds out `test_fraction` of each class."""

    if not root.is_dir():
        raise DataError(f"--source={root} is not a folder; pass ROOT of ROOT/<class>/<image>")
    trees = {"train": root / "train", "test": root / "test"}
    split_given = all(p.is_dir() for p in trees.values())
    base = trees["train"] if split_given else root
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    for c in classes:  # class names are stored as text: they must be text
        if shown(c) != c:
            raise DataError(
                f"{shown(base / c)}: a class folder whose name is not UTF-8; rename it (its name "
                f"becomes the class name)"
            )
    if not classes:
        raise DataError(f"{base}: no class folders; expected {base}/<class>/<image>.png|jpg")
    size = None if not image_size else (image_size, image_size)

    def scan(tree: Path):
        items = []
        for label, c in enumerate(classes):
            folder = tree / c
            if not folder.is_dir():
                raise DataError(f"{tree}: no class folder {c!r} (the classes are {classes})")
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            items += [(p, label) for p in files]
        return items

    if split_given:
        lists = {s: scan(t) for s, t in trees.items()}
    else:
        rng, lists = np.random.default_rng(seed), {"train": [], "test": []}
        items = scan(root)
        for label in range(len(classes)):
            mine = [it for it in items if it[1] == label]
            order = rng.permutation(len(mine))
            n_test = round(test_fraction * len(mine))
            lists["test"] += [mine[i] for i in order[:n_test]]
            lists["train"] += [mine[i] for i in order[n_test:]]
    splits = {}
    for split, items in lists.items():
        if not items:
            raise DataError(
                f"{root}: the {split} split has no images (IMAGE_SUFFIXES: png, jpg, ...)"
            )
        images = [read_image(p, size) for p, _ in items]
        odd = next((k for k, im in enumerate(images) if im.shape != images[0].shape), None)
        if odd is not None:
            raise DataError(
                f"{root}: images differ in size: {items[0][0]} is {images[0].shape[:2]}, "
                f"{items[odd][0]} is {images[odd].shape[:2]}; pass --image_size=N to resize all"
            )
        splits[split] = (np.stack(images), np.asarray([lab for _, lab in items], np.int64))
    return splits, classes


# --- downloads (only with --download): the canonical archives, each checked before it is kept

_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DOWNLOADS = {  # dataset: ((url, algorithm, digest), ...); sums as TFDS and torchvision list them
    "mnist": (
        (_MNIST + "train-images-idx3-ubyte.gz", "sha256",
         "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        (_MNIST + "train-labels-idx1-ubyte.gz", "sha256",
         "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        (_MNIST + "t10k-images-idx3-ubyte.gz", "sha256",
         "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        (_MNIST + "t10k-labels-idx1-ubyte.gz", "sha256",
         "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
    ),
    "fashion_mnist": (
        (_FASHION + "train-images-idx3-ubyte.gz", "sha256",
         "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        (_FASHION + "train-labels-idx1-ubyte.gz", "sha256",
         "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        (_FASHION + "t10k-images-idx3-ubyte.gz", "sha256",
         "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        (_FASHION + "t10k-labels-idx1-ubyte.gz", "sha256",
         "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
    ),
    "cifar10": (
        ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "md5",
         "c58f30108f718f92721af3b95e74349a"),
    ),
    "cifar100": (
        ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "md5",
         "eb9058c3a382ffc7106e4002c42a8d85"),
    ),
}  # fmt: skip


def download(dataset: str, dest: Path) -> Path:
    """Fetch `dataset`'s official files into dest (kept files are skipped); -> the source path.

    Each file lands as `<name>.part` and is renamed only once its checksum matches."""
    import urllib.request

    if dataset not in DOWNLOADS:
        raise DataError(f"--download: {dataset!r} has no canonical archive; pass --source=PATH")
    dest.mkdir(parents=True, exist_ok=True)
    for url, algorithm, digest in DOWNLOADS[dataset]:
        target = dest / url.rsplit("/", 1)[-1]
        if target.exists():
            continue
        part = target.with_name(target.name + ".part")
        h = hashlib.new(algorithm)
        try:
            with urllib.request.urlopen(url, timeout=60) as r, open(part, "wb") as f:
                while chunk := r.read(1 << 20):
                    h.update(chunk)
                    f.write(chunk)
        except OSError as e:
            part.unlink(missing_ok=True)
            raise DataError(
                f"--download: cannot fetch {url} ({e}); without a network, copy the file to "
                f"{dest} and pass --source={dest}"
            ) from None
        if h.hexdigest() != digest:
            part.unlink()
            raise DataError(
                f"--download: {url} has {algorithm} {h.hexdigest()}, expected {digest}; the file "
                f"was deleted: try again, or fetch it by hand"
            )
        part.rename(target)
    return (
        dest if len(DOWNLOADS[dataset]) > 1 else dest / DOWNLOADS[dataset][0][0].rsplit("/", 1)[-1]
    )


# --- writer


def channel_stats(images: np.ndarray, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images / 255 over (N, H, W), in float64, chunk by chunk."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].astype(np.float64) / 255.0
        total += x.sum(axis=(0, 1, 2))
        squares += (x * x).sum(axis=(0, 1, 2))
    n = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / n
    return [float(m) for m in mean], [float(s) for s in np.sqrt(squares / n - mean * mean)]


def write(name: str, splits: dict, class_names: list[str], data_dir: str, augment=(False, 0)):
    """Write {split: (images, labels)} as the TFDS array_record dataset `name`; -> its folder.

    `augment` = (horizontal flips keep the label, pad-and-crop padding), stored with the data
    next to the training split's mean/std. An existing prepared copy is left as it is.
    """
    import tensorflow_datasets as tfds

    dataset_name = name
    images = splits["train"][0]
    mean, std = channel_stats(images)
    n_classes = len(class_names)
    for split, (x, y) in splits.items():
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != images.shape[1:]:
            raise DataError(
                f"{name}: {split} images {x.shape} {x.dtype}, expected uint8 (N, H, W, C)"
            )
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise DataError(f"{name}: {split} labels outside 0..{n_classes - 1}")

    class Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        name = dataset_name
        VERSION = tfds.core.Version(VERSION)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description=f"{dataset_name}, prepared by cnnlab.data.prepare",
                features=tfds.features.FeaturesDict(
                    {
                        "image": tfds.features.Tensor(shape=images.shape[1:], dtype=np.uint8),
                        "label": tfds.features.ClassLabel(names=class_names),
                    }
                ),
                supervised_keys=("image", "label"),
                metadata=tfds.core.MetadataDict(
                    mean=mean, std=std, flip=bool(augment[0]), crop_pad=int(augment[1])
                ),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split):
            x, y = splits[split]
            for i in range(len(x)):
                yield i, {"image": x[i], "label": int(y[i])}

    digits.write_quietly(Builder, data_dir)
    return Path(data_dir) / name / VERSION


SOURCE_STAMP = "source.json"  # beside a prepared folder dataset: what it was prepared from


def folder_stamp(root: Path, options: dict) -> dict:
    """What a folder dataset was prepared from: the folder, how many files, and a SHA-256 of
    every file's relative path, size and modification time with the preparation's options
    (an image added, removed, replaced or touched changes it; nothing is read but metadata)."""
    h = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
    files = sorted(p for p in root.rglob("*") if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(
            "utf-8", "surrogateescape"))  # fmt: skip
    return {"source": str(root.resolve()), "files": len(files), "sha256": h.hexdigest(),
            "options": options}  # fmt: skip


def _check_unchanged(target: Path, stamp: dict, force: bool) -> bool:
    """Is the folder dataset at `target` already prepared from this source as it is now? A
    prepared copy of another source, or of this one before it changed, is a DataError naming
    --force; with `force` it is removed (then False: prepare it again)."""
    if not target.exists():
        return False
    saved_file = target / SOURCE_STAMP
    saved = json.loads(saved_file.read_text()) if saved_file.exists() else None
    if saved and saved.get("sha256") == stamp["sha256"] and not force:
        return True
    if not force:
        was = (
            f"from {saved['source']} ({saved['files']} files, options {saved['options']})"
            if saved
            else "before cnnlab recorded its source"
        )
        raise DataError(
            f"{target.parent.name!r} was prepared {was}; --source={stamp['source']} now has "
            f"{stamp['files']} files{' or other contents or options' if saved else ''}. Pass "
            f"--force to prepare it again (replaces {target}), or give another --name"
        )
    shutil.rmtree(target)
    return False


def prepare(dataset: str, source: str | None, data_dir: str, force: bool = False,
            **folder) -> Path:  # fmt: skip
    """Read `source` for `dataset` and write it into data_dir; -> the dataset's folder.

    `folder` options: name, image_size, test_fraction, seed, flip (default True) and crop_pad
    (default -1: an eighth of the image side) of the augmentation stored with it (folder);
    labels (cifar100). A
    folder dataset remembers its source (`folder_stamp`): preparing it again from a changed
    folder is a DataError unless `force`, which replaces the prepared copy."""
    if dataset == "fashion_mnist" and not source:
        source = FASHION_MNIST_DEBIAN
    if not source:
        raise DataError(f"{dataset}: pass --source=PATH (where the official files are)")
    src = Path(source).expanduser()
    if not src.exists():
        hint = (
            " (apt-get install dataset-fashion-mnist)" if src == Path(FASHION_MNIST_DEBIAN) else ""
        )
        raise DataError(f"--source={src} does not exist{hint}")
    if dataset in ("mnist", "fashion_mnist"):
        splits, classes = read_mnist_like(src), CLASS_NAMES[dataset]
        out = dataset
    elif dataset in ("cifar10", "cifar100"):
        labels = folder.get("labels") or "fine"
        splits, classes = read_cifar(src, dataset, labels)
        out = "cifar100_coarse" if labels == "coarse" else dataset
    elif dataset == "folder":
        out = folder.get("name") or ""
        if not out.isidentifier() or out.lower() != out:
            raise DataError(
                f"--name={out!r}: give the dataset a lower-case name, e.g. --name=flowers"
            )
        options = {"image_size": folder.get("image_size") or 0,
                   "test_fraction": folder.get("test_fraction", 0.2),
                   "seed": folder.get("seed", 0), "flip": bool(folder.get("flip", True)),
                   "crop_pad": int(folder.get("crop_pad", -1))}  # fmt: skip
        if options["crop_pad"] < -1:
            raise DataError(f"--crop_pad={options['crop_pad']}: give N >= 0 pixels, or -1 for "
                            f"an eighth of the image side")  # fmt: skip
        stamp = folder_stamp(src, options) if src.is_dir() else None
        target = Path(data_dir) / out / VERSION
        if stamp and _check_unchanged(target, stamp, force):
            return target
        splits, classes = read_folder(
            src, options["image_size"], options["test_fraction"], options["seed"]
        )
    else:
        raise DataError(f"unknown dataset {dataset!r}; prepare one of {', '.join(NAMES)}")
    spec = SPECS.get(out)
    augment = (spec.flip, spec.crop_pad) if spec else (False, 0)
    if dataset == "folder":  # flips and pad-and-crop as asked; -1: an eighth of the side
        side = min(splits["train"][0].shape[1:3])
        pad = options["crop_pad"] if options["crop_pad"] >= 0 else max(1, side // 8)
        augment = (options["flip"], pad)
    path = write(out, splits, classes, data_dir, augment)
    if dataset == "folder" and stamp is not None:  # what it was prepared from, beside it
        write_text_atomic(path / SOURCE_STAMP, json.dumps(stamp, indent=1))
    return path


NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "folder")


def on_first_use(name: str, data_dir: str) -> None:
    """What is prepared offline when first read: the embedded digits, and Fashion-MNIST from
    Debian's dataset-fashion-mnist files (a DataError saying how, when they are absent)."""
    if name == digits.NAME and not prepared(name, data_dir):
        digits.prepare(data_dir)
    if name == "fashion_mnist" and not prepared(name, data_dir):
        if not Path(FASHION_MNIST_DEBIAN).is_dir():
            raise DataError(how_to_prepare(name, data_dir))
        prepare(name, FASHION_MNIST_DEBIAN, data_dir)  # offline, once


def main(argv=None) -> int:
    import argparse
    import sys

    p = argparse.ArgumentParser(
        prog="python -m cnnlab.data.prepare", description=__doc__.split("\n")[0]
    )
    p.add_argument("dataset", choices=NAMES)
    p.add_argument("--source", help="official files (folder, tarball) or an ImageFolder root")
    p.add_argument(
        "--data_dir", default="", help="default: $CNNLAB_DATA_DIR or ~/.cache/cnnlab/..."
    )
    p.add_argument("--name", help="folder: the dataset's name")
    p.add_argument("--image_size", type=int, default=0, help="folder: resize to N x N")
    p.add_argument("--test_fraction", type=float, default=0.2, help="folder without test/")
    p.add_argument("--seed", type=int, default=0, help="folder: the split's seed")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=True,
                   help="folder: training flips images left-right (--no-flip: the label "
                        "depends on the side)")  # fmt: skip
    p.add_argument("--crop_pad", type=int, default=-1,
                   help="folder: pad-and-crop augmentation's padding in pixels (0: none; -1: "
                        "an eighth of the image side)")  # fmt: skip
    p.add_argument("--labels", choices=("fine", "coarse"), default="fine", help="cifar100")
    p.add_argument(
        "--force",
        action="store_true",
        help="folder: prepare again although a copy of this --name exists (replaced)",
    )
    p.add_argument("--download", action="store_true",
                   help="fetch the official files (checksums verified) into --source or "
                        "DATA_DIR/downloads/<dataset> first")  # fmt: skip
    a = p.parse_args(argv)
    data_dir = a.data_dir or default_data_dir()
    try:
        if a.download:
            a.source = str(
                download(a.dataset, Path(a.source or Path(data_dir) / "downloads" / a.dataset))
            )
        path = prepare(
            a.dataset, a.source, data_dir, force=a.force, name=a.name,
            image_size=a.image_size, test_fraction=a.test_fraction, seed=a.seed, labels=a.labels,
            flip=a.flip, crop_pad=a.crop_pad,
        )  # fmt: skip
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"prepared {path}; train with --config.data.name={path.parent.name} "
          f"--config.data.data_dir={path.parent.parent}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
