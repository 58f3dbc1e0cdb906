"""cnnlab.data.prepare: official MNIST / CIFAR formats and image folders -> array_record, no TF."""

import gzip
import io
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab import data
from cnnlab.data import prepare

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX format by its definition: 0, 0, type 0x08 (uint8), ndim, big-endian dims, data."""
    return (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def write_mnist(folder: Path, n_train=30, n_test=10, gz=True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    pair = lambda n: (RNG.integers(0, 256, (n, 6, 5), np.uint8), RNG.integers(0, 10, n, np.uint8))
    arrays = {"train": pair(n_train), "test": pair(n_test)}
    for split, (img, lab) in prepare.IDX_FILES.items():
        for stem, arr in ((img, arrays[split][0]), (lab, arrays[split][1])):
            raw = idx_bytes(arr)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
    return arrays


def by_pixels(split) -> dict:
    """{image bytes: label}: TFDS shuffles records, so compare as a mapping."""
    return {
        np.asarray(split[i]["image"]).tobytes(): int(split[i]["label"]) for i in range(len(split))
    }


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_files_round_trip_with_stats(tmp_path, gz):
    arrays = write_mnist(tmp_path / "src", gz=gz)
    path = prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "data"))
    assert path == tmp_path / "data" / "mnist" / "1.0.0"
    ds = data.load("mnist", data_dir=str(tmp_path / "data"))
    assert (ds.num_classes, ds.image_shape, len(ds.train), len(ds.test)) == (10, (6, 5, 1), 30, 10)
    for split, src in (("train", ds.train), ("test", ds.test)):
        images, labels = arrays[split]
        want = {im[..., None].tobytes(): int(lab) for im, lab in zip(images, labels, strict=True)}
        assert by_pixels(src) == want
    x = arrays["train"][0] / 255.0  # stats of the training split, stored with the data
    assert ds.spec.mean == pytest.approx((x.mean(),)) and ds.spec.std == pytest.approx((x.std(),))
    assert (ds.spec.flip, ds.spec.crop_pad) == (False, 2)  # MNIST: no flips


def test_damaged_idx_files_are_one_line_errors(tmp_path):
    write_mnist(tmp_path / "src", gz=False)
    f = tmp_path / "src" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:-7])
    says = r"idx3-ubyte: truncated or padded: the header says \(30, 6, 5\) = 900 bytes of data"
    with pytest.raises(data.DataError, match=says + r", the file has 893"):
        prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "data"))
    f.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(data.DataError, match=r"not an IDX file .*magic 504b0304"):
        prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "data"))
    f.unlink()
    with pytest.raises(data.DataError, match="no train-images-idx3-ubyte or train-images-idx3-ub"):
        prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "data"))
    assert not (tmp_path / "data" / "mnist").exists()  # nothing half-written


# The official CIFAR pickles are protocol 2 (Python 2); the fixtures pin it, since Python's
# default protocol (4, and 5 from 3.14) names other numpy globals
OFFICIAL_PROTOCOL = 2


def cifar_members(n: int, fine: bool = False, protocol: int = OFFICIAL_PROTOCOL,
                  labels_as=int) -> dict[str, bytes]:  # fmt: skip
    """The official python-pickle layout with n images per batch; pixel (0, 0) of image i in
    channel c is (i + 10 c) % 256, so the NHWC transpose can be checked. `labels_as`: the type
    of each label (numpy integers in a file someone loaded and saved again)."""
    dumps = lambda obj: pickle.dumps(obj, protocol=protocol)

    def batch(offset, key):
        data = np.zeros((n, 3, 32, 32), np.uint8)
        for i in range(n):
            for c in range(3):
                data[i, c, 0, 0] = (offset + i + 10 * c) % 256
        labels = [labels_as((offset + i) % 5) for i in range(n)]
        coarse = [labels_as((offset + i) % 2) for i in range(n)]
        return dumps({b"data": data.reshape(n, 3072), key: labels, b"coarse_labels": coarse})

    if fine:
        meta = {b"fine_label_names": [f"f{i}".encode() for i in range(5)],
                b"coarse_label_names": [b"c0", b"c1"]}  # fmt: skip
        return {"cifar-100-python/train": batch(0, b"fine_labels"),
                "cifar-100-python/test": batch(100, b"fine_labels"),
                "cifar-100-python/meta": dumps(meta)}  # fmt: skip
    out = {f"cifar-10-batches-py/data_batch_{k}": batch(10 * k, b"labels") for k in range(1, 6)}
    out["cifar-10-batches-py/test_batch"] = batch(100, b"labels")
    out["cifar-10-batches-py/batches.meta"] = dumps(
        {b"label_names": [f"class{i}".encode() for i in range(5)]}
    )
    return out


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def test_cifar10_from_the_tarball_and_from_its_folder(tmp_path):
    members = cifar_members(4)
    src = tarball(tmp_path / "cifar-10-python.tar.gz", members)
    prepare.prepare("cifar10", str(src), str(tmp_path / "a"))
    folder = tmp_path / "extracted"
    for name, blob in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(blob)
    prepare.prepare("cifar10", str(folder), str(tmp_path / "b"))
    for d in ("a", "b"):
        ds = data.load("cifar10", data_dir=str(tmp_path / d))
        assert (ds.image_shape, len(ds.train), len(ds.test), ds.num_classes) == (
            (32, 32, 3),
            20,
            4,
            5,
        )
        pixels = {tuple(np.asarray(ds.train[i]["image"])[0, 0]) for i in range(20)}
        assert pixels == {
            (v, v + 10, v + 20) for v in [10 * k + i for k in range(1, 6) for i in range(4)]
        }
        assert (ds.spec.flip, ds.spec.crop_pad) == (True, 4)


@pytest.mark.parametrize("protocol", [OFFICIAL_PROTOCOL, 4, 5])
def test_a_cifar_file_saved_again_by_python_3_reads_the_same(tmp_path, protocol):
    """Loaded and saved again (labels now numpy integers) with protocol 2, 4 or 5: the same
    images and labels as the official-layout file, read by the same restricted unpickler."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
    official = tarball(tmp_path / "a" / "cifar-10-python.tar.gz", cifar_members(3))
    resaved = cifar_members(3, protocol=protocol, labels_as=np.int64)
    blob = resaved["cifar-10-batches-py/data_batch_1"]
    assert b"scalar" in blob and (protocol != 5 or b"_frombuffer" in blob)
    prepare.prepare("cifar10", str(official), str(tmp_path / "a" / "d"))
    again = tarball(tmp_path / "b" / "cifar-10-python.tar.gz", resaved)
    prepare.prepare("cifar10", str(again), str(tmp_path / "b" / "d"))
    a, b = (data.load("cifar10", data_dir=str(tmp_path / d / "d")) for d in ("a", "b"))
    for split in ("train", "test"):
        x, y = getattr(a, split), getattr(b, split)
        assert len(x) == len(y) > 0
        for i in range(len(x)):
            np.testing.assert_array_equal(x[i]["image"], y[i]["image"])
            assert int(x[i]["label"]) == int(y[i]["label"])


def test_cifar100_fine_and_coarse_labels(tmp_path):
    src = tarball(tmp_path / "cifar-100-python.tar.gz", cifar_members(6, fine=True))
    prepare.prepare("cifar100", str(src), str(tmp_path / "d"))
    prepare.prepare("cifar100", str(src), str(tmp_path / "d"), labels="coarse")
    fine = data.load("cifar100", data_dir=str(tmp_path / "d"))
    coarse = data.load("cifar100_coarse", data_dir=str(tmp_path / "d"))
    assert (fine.num_classes, coarse.num_classes) == (5, 2)
    bad = tarball(tmp_path / "broken.tar.gz", {"cifar-100-python/train": b"junk"})
    with pytest.raises(data.DataError, match=r"broken.tar.gz: missing \['meta', 'test'\]"):
        prepare.prepare("cifar100", str(bad), str(tmp_path / "e"))


class _Opens:
    """Pickles as a call of open(path, 'w'): a file appears if the pickle is executed."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_cifar_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    members = cifar_members(2)
    members["cifar-10-batches-py/data_batch_3"] = pickle.dumps(
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"x": _Opens(marker)}
    )
    assert pickle.loads(members["cifar-10-batches-py/data_batch_3"]) and marker.exists()
    marker.unlink()  # the crafted member does run code under pickle.loads
    src = tarball(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(data.DataError) as caught:
        prepare.prepare("cifar10", str(src), str(tmp_path / "d"))
    message = str(caught.value)
    assert re.search(r"data_batch_3: refused: the pickle names _io\.open,", message)
    assert "\n" not in message and not marker.exists()
    assert not (tmp_path / "d" / "cifar10").exists()


def image_tree(root: Path, sizes=((8, 6),), per_class=5, classes=("cat", "dog")):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            Image.new("RGB", (w, h), (c * 100, i * 10, 7)).save(root / name / f"{i}.png")


def test_image_folder_split_resize_and_class_names(tmp_path):
    image_tree(tmp_path / "imgs", sizes=((8, 6), (5, 5)))
    with pytest.raises(data.DataError, match=r"images differ in size.*--image_size=N"):
        prepare.prepare("folder", str(tmp_path / "imgs"), str(tmp_path / "d"), name="pets")
    prepare.prepare("folder", str(tmp_path / "imgs"), str(tmp_path / "d"), name="pets",
                    image_size=4, test_fraction=0.4)  # fmt: skip
    ds = data.load("pets", data_dir=str(tmp_path / "d"))
    assert (ds.image_shape, len(ds.train), len(ds.test), ds.num_classes) == ((4, 4, 3), 6, 4, 2)
    import tensorflow_datasets as tfds

    info = tfds.builder_from_directory(str(tmp_path / "d" / "pets" / "1.0.0")).info
    assert info.features["label"].names == ["cat", "dog"]  # sorted folder names, in order
    # explicit train/ and test/ trees are kept as they are
    image_tree(tmp_path / "split" / "train", per_class=3)
    image_tree(tmp_path / "split" / "test", per_class=2)
    prepare.prepare("folder", str(tmp_path / "split"), str(tmp_path / "d"), name="pets2")
    ds = data.load("pets2", data_dir=str(tmp_path / "d"))
    assert (len(ds.train), len(ds.test), ds.image_shape) == (6, 4, (6, 8, 3))
    with pytest.raises(data.DataError, match="give the dataset a lower-case name"):
        prepare.prepare("folder", str(tmp_path / "split"), str(tmp_path / "d"), name="My Set")


def test_a_folder_prepared_again_after_it_changed_is_refused_unless_forced(tmp_path):
    """Preparing an unchanged folder again keeps the prepared copy; after an image is added
    (or with other options) it is a one-line error naming --force, and nothing is touched;
    with force the copy is replaced and holds the new image."""
    image_tree(tmp_path / "imgs", per_class=5)
    args = ("folder", str(tmp_path / "imgs"), str(tmp_path / "d"))
    path = prepare.prepare(*args, name="pets", test_fraction=0.4)
    before = sorted(f.name for f in path.iterdir())
    assert prepare.prepare(*args, name="pets", test_fraction=0.4) == path  # unchanged: kept
    Image.new("RGB", (8, 6), (1, 2, 3)).save(tmp_path / "imgs" / "cat" / "new.png")
    with pytest.raises(data.DataError, match=r"'pets' was prepared from .* \(10 files.*now has "
                       r"11 files.*Pass --force to prepare it again") as caught:  # fmt: skip
        prepare.prepare(*args, name="pets", test_fraction=0.4)
    assert "\n" not in str(caught.value) and sorted(f.name for f in path.iterdir()) == before
    with pytest.raises(data.DataError, match="--force"):  # other options: another dataset
        prepare.prepare(*args, name="pets", test_fraction=0.2)
    prepare.prepare(*args, name="pets", test_fraction=0.4, force=True)
    ds = data.load("pets", data_dir=str(tmp_path / "d"))
    assert len(ds.train) + len(ds.test) == 11


def noise_jpeg() -> bytes:
    out = io.BytesIO()
    Image.effect_noise((32, 32), 64).convert("RGB").save(out, "JPEG")
    return out.getvalue()


def test_hostile_image_folders_are_refused_by_name(tmp_path, monkeypatch):
    """A decompression bomb, a truncated image, a text file named .jpg and a symlink loop named
    .png are each a one-line error naming the file, written before anything is kept; a PNG named
    .jpg is read by content, a non-UTF-8 file name is read and a non-UTF-8 class folder refused
    by its escaped name."""

    def attempt(tree):
        with pytest.raises(data.DataError) as caught:
            prepare.prepare("folder", str(tree), str(tmp_path / "d"), name="pets")
        assert not (tmp_path / "d" / "pets").exists()
        return str(caught.value)

    image_tree(tmp_path / "bomb", sizes=((4, 4),))  # 16 pixels each
    Image.new("RGB", (8, 6)).save(tmp_path / "bomb" / "cat" / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)  # 48 pixels: over the limit, not 2x
    assert "big.png: refused as a possible decompression bomb" in attempt(tmp_path / "bomb")
    monkeypatch.undo()
    cases = {
        "cut.jpg": lambda p: p.write_bytes(noise_jpeg()[:400]),  # of about 1.2 kB
        "text.jpg": lambda p: p.write_text("not an image"),
        "loop.png": lambda p: p.symlink_to(p),
    }
    for name, make in cases.items():
        tree = tmp_path / name.replace(".", "_")
        image_tree(tree)
        make(tree / "dog" / name)
        message = attempt(tree)
        assert f"dog/{name}: not a readable image, or truncated" in message, message
    tree = tmp_path / "names"
    image_tree(tree)
    (tree / "dog" / "0.png").rename(tree / "dog" / "0.jpg")  # misnamed: read by content
    odd = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not UTF-8
    (tree / "cat" / "0.png").rename(tree / "cat" / odd)
    prepare.prepare("folder", str(tree), str(tmp_path / "d"), name="pets")
    assert data.load("pets", data_dir=str(tmp_path / "d")).num_classes == 2
    image_tree(tree, classes=(os.fsdecode(b"ch\xe4t"),))
    shutil.rmtree(tmp_path / "d")
    assert "names/ch\\xe4t: a class folder whose name is not UTF-8" in attempt(tree)


def test_fashion_mnist_is_prepared_from_the_debian_files_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "FASHION_MNIST_DEBIAN", str(tmp_path / "absent"))
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", data_dir=str(tmp_path / "d"))
    write_mnist(tmp_path / "debian", n_train=12, n_test=4)
    monkeypatch.setattr(prepare, "FASHION_MNIST_DEBIAN", str(tmp_path / "debian"))
    ds = data.load("fashion_mnist", data_dir=str(tmp_path / "d"))
    assert (len(ds.train), len(ds.test), ds.spec.flip) == (12, 4, True)


def test_cli_prepares_and_bad_sources_are_one_line_errors(tmp_path):
    write_mnist(tmp_path / "src", n_train=8, n_test=4)
    run = lambda *a: subprocess.run([sys.executable, "-m", "cnnlab.data.prepare", *a], cwd=ROOT,
                                    capture_output=True, text=True, timeout=300)  # fmt: skip
    ok = run("mnist", f"--source={tmp_path / 'src'}", f"--data_dir={tmp_path / 'd'}")
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "RuntimeWarning" not in ok.stderr, ok.stderr  # runpy's "found in sys.modules"
    assert f"--config.data.name=mnist --config.data.data_dir={tmp_path / 'd'}" in ok.stdout
    bad = run("cifar10", f"--source={tmp_path / 'nope.tar.gz'}", f"--data_dir={tmp_path / 'd'}")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip().splitlines()[-1].startswith("error: --source=")
        and "does not exist" in bad.stderr
    )


def test_download_verifies_checksums_and_keeps_nothing_bad(tmp_path, monkeypatch):
    """--download's fetch, on file:// URLs (no network here): a matching digest is kept, a wrong
    one is deleted with a one-line error, and the fetched files prepare like any source."""
    import hashlib

    arrays = write_mnist(tmp_path / "server", n_train=8, n_test=4)
    files = sorted((tmp_path / "server").iterdir())
    table = tuple((f.as_uri(), "sha256", hashlib.sha256(f.read_bytes()).hexdigest()) for f in files)
    monkeypatch.setitem(prepare.DOWNLOADS, "mnist", table)
    src = prepare.download("mnist", tmp_path / "dl")
    assert sorted(p.name for p in src.iterdir()) == [f.name for f in files]
    prepare.prepare("mnist", str(src), str(tmp_path / "d"))
    assert len(data.load("mnist", data_dir=str(tmp_path / "d")).train) == len(arrays["train"][0])
    bad = ((files[0].as_uri(), "md5", "0" * 32),)
    monkeypatch.setitem(prepare.DOWNLOADS, "cifar10", bad)
    with pytest.raises(data.DataError, match=r"has md5 [0-9a-f]{32}, expected 0{32}; the file was"):
        prepare.download("cifar10", tmp_path / "dl2")
    assert list((tmp_path / "dl2").iterdir()) == []  # neither the file nor its .part is left


# --- archive bombs: a member that inflates far past what its format can hold is refused by
# name before it is read; tracemalloc's peak (every bytes object and numpy array) shows it
BOMB = 512 * 2**20  # inflates to 512 MiB from about 0.5 MB


class Zeros(io.RawIOBase):
    """`n` zero bytes as a stream (never held whole)."""

    def __init__(self, n: int):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def peak_bytes_of(fn) -> tuple[Exception, int]:
    """The exception `fn()` raises and the peak memory Python allocated meanwhile."""
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
    except Exception as e:
        caught = e
    else:
        caught = None
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return caught, peak


def test_a_cifar_tarball_bomb_is_refused_by_name_unread(tmp_path):
    members = cifar_members(2)
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            size, stream = (BOMB, Zeros(BOMB)) if name.endswith("data_batch_1") else (
                len(blob), io.BytesIO(blob))  # fmt: skip
            info.size = size
            tar.addfile(info, stream)
    assert path.stat().st_size < 4 * 2**20
    caught, peak = peak_bytes_of(lambda: prepare.prepare("cifar10", str(path), str(tmp_path / "d")))
    assert isinstance(caught, data.DataError), caught
    assert str(caught).startswith(f"{path}: member data_batch_1 is {BOMB} bytes, over the ")
    assert "refused unread" in str(caught) and peak < 256 * 2**20, peak
    assert not (tmp_path / "d" / "cifar10").exists()


def test_an_idx_gzip_bomb_is_refused_after_the_bytes_its_header_announces(tmp_path):
    write_mnist(tmp_path / "src", n_train=8, n_test=4)
    bomb = tmp_path / "src" / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:
        f.write(idx_bytes(np.zeros((8, 6, 5), np.uint8)))  # the header says 240 bytes
        zeros = Zeros(BOMB)
        while chunk := zeros.read(2**22):
            f.write(chunk)
    caught, peak = peak_bytes_of(
        lambda: prepare.prepare("mnist", str(tmp_path / "src"), str(tmp_path / "d"))
    )
    assert isinstance(caught, data.DataError), caught
    assert str(caught) == (
        f"{bomb}: truncated or padded: the header says (8, 6, 5) = 240 bytes of data, the file "
        "has more than that (not read further); fetch the file again"
    )
    assert peak < 256 * 2**20, peak


def pth_pickle(numel: int) -> bytes:
    """torch.save's data.pkl for {'w': a float tensor of `numel` elements in storage '0'},
    written opcode by opcode (no torch here): the persistent id ('storage', FloatStorage, '0',
    'cpu', numel) and torch._utils._rebuild_tensor_v2(storage, 0, (numel,), (1,), False, {})."""
    text = lambda t: b"X" + struct.pack("<I", len(t)) + t.encode()
    return (b"\x80\x02}" + text("w") + b"ctorch._utils\n_rebuild_tensor_v2\n("
            + b"(" + text("storage") + b"ctorch\nFloatStorage\n" + text("0") + text("cpu")
            + b"J" + struct.pack("<i", numel) + b"tQ"  # the storage's persistent id
            + b"K\x00J" + struct.pack("<i", numel) + b"\x85K\x01\x85\x89"
            + b"ccollections\nOrderedDict\n)RtRs.")  # fmt: skip


def test_a_pth_zip_bomb_is_refused_before_it_inflates(tmp_path):
    """A torch.save zip whose storage inflates past its tensor's size, or whose data.pkl is
    larger than any state dict's, is refused from the zip's directory."""
    import zipfile

    from cnnlab import pretrained

    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("archive/data.pkl", pth_pickle(numel=4))
        with z.open("archive/data/0", "w", force_zip64=True) as f:
            zeros = Zeros(BOMB)
            while chunk := zeros.read(2**22):
                f.write(chunk)
    caught, peak = peak_bytes_of(lambda: pretrained.load("torchvision/resnet18", path))
    assert isinstance(caught, pretrained.WeightsError), caught
    assert str(caught) == (
        f"{path}: storage 0 inflates to {BOMB} bytes, but its tensor needs 16; not read: fetch "
        "the file again"
    )
    assert peak < 256 * 2**20, peak
