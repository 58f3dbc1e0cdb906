"""Download a source's published weights file into the cache, checking its published hash.

    python -m cnnlab.pretrained fetch torchvision/resnet50                 # IMAGENET1K_V1
    python -m cnnlab.pretrained fetch torchvision/resnet50 --weights=IMAGENET1K_V2
    python -m cnnlab.pretrained fetch keras/ResNet50 --notop
    python -m cnnlab.pretrained fetch torchvision/resnet18 --base_url=http://mirror/models

Files land in $CNNLAB_CACHE_DIR/pretrained (default ~/.cache/cnnlab/pretrained); the path is
printed. torchvision's file names end in the first 8 hex digits of the file's SHA-256, Keras'
ResNet50 files have published MD5s (keras.applications' WEIGHTS_HASHES); a download whose hash
differs is deleted (nothing is kept) and is a one-line error. Keras publishes no hash for
MobileNetV2: its SHA-256 is printed for you to record. `--base_url` fetches the same file name
from a mirror (the tests serve one on 127.0.0.1).
"""

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from cnnlab.pretrained.formats import WeightsError

KERAS = {  # keras.applications' files: (url, md5 or None)
    ("keras/ResNet50", True): (
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5", "2cb95161c43110f7111970584f804107"),
    ("keras/ResNet50", False): (
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626"),
    ("keras/MobileNetV2", True): (
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", None),
    ("keras/MobileNetV2", False): (
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", None),
}  # fmt: skip
MAX_BYTES = 2 << 30  # no published file is near 2 GiB; a server sending more is refused


def cache_dir() -> Path:
    """$CNNLAB_CACHE_DIR/pretrained, else ~/.cache/cnnlab/pretrained."""
    from cnnlab.distributed import cache_root

    return Path(cache_root()) / "pretrained"


def published(arch: str, weights: str = "IMAGENET1K_V1", top: bool = True):
    """(url, hash algorithm, expected hex: a prefix for torchvision, None where unpublished)."""
    from cnnlab.pretrained import source

    src = source(arch)
    if arch.startswith("keras/"):
        url, md5 = KERAS[arch, top]
        return url, "md5", md5
    if weights not in src.files:
        raise WeightsError(f"{arch} has weights {sorted(src.files)}; got {weights!r}")
    url = src.files[weights][0]
    return url, "sha256", url.rsplit("-", 1)[1].removesuffix(".pth")


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(path: Path, algo: str, want: str | None, what: str) -> str:
    got = _digest(path, algo)
    if want and not got.startswith(want):
        raise WeightsError(f"{what}: its {algo.upper()} is {got[: len(want)]}..., the published "
                           f"one {want}: a damaged or substituted file")  # fmt: skip
    return got


def fetch(arch: str, *, weights: str = "IMAGENET1K_V1", top: bool = True,
          directory=None, base_url: str = "", progress: bool = True) -> Path:  # fmt: skip
    """The published weights file of `arch`, downloaded once into `directory` (cache_dir())."""
    url, algo, want = published(arch, weights, top)
    name = url.rsplit("/", 1)[1]
    if base_url:
        url = f"{base_url.rstrip('/')}/{name}"
    directory = Path(directory or cache_dir())
    target = directory / name
    if target.exists():
        _check(target, algo, want, f"{target} (already in the cache; delete it to fetch again)")
        return target
    directory.mkdir(parents=True, exist_ok=True)
    part = target.with_name(name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as r, part.open("wb") as out:
            total = int(r.headers.get("Content-Length") or 0) or None
            if total and total > MAX_BYTES:
                raise WeightsError(f"{url}: the server announces {total:,} bytes; refused")
            from tqdm import tqdm

            with tqdm(
                total=total, unit="B", unit_scale=True, desc=name, disable=not progress
            ) as bar:
                n = 0
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    n += len(chunk)
                    if n > MAX_BYTES:
                        raise WeightsError(f"{url}: more than {MAX_BYTES:,} bytes; refused")
                    out.write(chunk)
                    bar.update(len(chunk))
        _check(part, algo, want, f"{url}: the download (nothing kept)")
    except (urllib.error.URLError, OSError) as e:
        part.unlink(missing_ok=True)
        raise WeightsError(
            f"{url}: download failed ({e}); check the network or use --base_url with a mirror, "
            "or download the file yourself and pass its path"
        ) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    if not want:
        print(f"note: no published hash for {name}; its SHA-256 is {_digest(target, 'sha256')}")
    return target
