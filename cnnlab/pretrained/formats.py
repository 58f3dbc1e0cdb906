"""Weight files read without PyTorch or TensorFlow, the format told from the file's first bytes.

- torchvision `.pth` (torch.save's zip: `<name>/data.pkl` + one raw storage per tensor): the
  pickle is read by a restricted unpickler that builds only tensors (`_rebuild_tensor_v2` over
  typed storages), ordered dicts and plain containers; any other global (a function a crafted
  file would call, e.g. `os.system`) is refused before it is looked up.
- `.safetensors` (timm's `resnet50.tv_in1k` and the like): `safetensors.numpy`.
- Keras applications' `.h5` (the file `keras.applications` downloads: one group per layer
  holding `weight_names`) and Keras 3 `.weights.h5` (`layers/<name>/vars/<i>`): h5py.

`read(path)` -> (format, {name: float32/int numpy array}); Keras names are
`<layer>/<variable>` (e.g. `conv1_conv/kernel`, `conv1_bn/moving_mean`).
"""

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from cnnlab.errors import CnnlabError


class WeightsError(CnnlabError, ValueError):
    """A weight file that cannot be read, or that does not fit the architecture it is loaded as."""


ZIP, HDF5 = b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"
_PICKLE_PROTOCOLS = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")

# torch's typed storages -> numpy dtypes (torch.save names the class of each tensor's storage)
_STORAGES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


MAX_PICKLE_BYTES = 64 * 2**20  # a torch.save's data.pkl: names and shapes only, never tensors


class _Refused(Exception):
    pass


class _Storage:
    """A typed storage named by a torch.save pickle; its bytes are read from the zip on demand."""

    def __init__(self, kind: str):
        self.kind = kind


def _rebuild_tensor_v2(storage, offset, size, stride, *_):
    """torch._utils._rebuild_tensor_v2 for a numpy storage: a strided view of it (read-only,
    sharing the storage's bytes: no copy for the usual contiguous tensor; a transposed or
    otherwise non-contiguous one is copied)."""
    if not size:
        return storage[offset : offset + 1].reshape(()).copy()
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * item for s in stride),
        writeable=False,
    )  # fmt: skip
    return view if view.flags.c_contiguous else np.ascontiguousarray(view)


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, blob: bytes, storage):
        super().__init__(io.BytesIO(blob))
        self._storage = storage

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        # ('storage', storage class, key, location, numel), as torch.save writes it
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Refused(f"persistent id {pid!r}")
        kind, key = pid[1], str(pid[2])
        if not isinstance(kind, _Storage):
            raise _Refused(f"storage type {kind!r}")
        return self._storage(key, kind.kind, int(pid[4]))


def _dtype(kind: str):
    dt = _STORAGES[kind]
    if dt == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dt)


def read_pth(path: Path) -> dict[str, np.ndarray]:
    """A torch.save zip of a state dict, as {name: array}, without importing torch."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise WeightsError(f"{path}: not a readable torch.save zip ({e})") from None
    with zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise WeightsError(f"{path}: a zip, but not a torch.save file (no single data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        cache: dict[str, np.ndarray] = {}

        def storage(key: str, kind: str, numel: int) -> np.ndarray:
            if key not in cache:
                member = f"{prefix}data/{key}"
                if member not in names:
                    raise WeightsError(f"{path}: storage {key} is missing from the zip")
                need = numel * _dtype(kind).itemsize  # the pickle says how big it is
                size = zf.getinfo(member).file_size
                if size != need:  # refused before it is inflated
                    raise WeightsError(
                        f"{path}: storage {key} inflates to {size} bytes, "
                        f"but its tensor needs {need}; not read: fetch the file again"
                    )
                cache[key] = np.frombuffer(zf.read(member), dtype=_dtype(kind))
            return cache[key]

        size = zf.getinfo(pkl[0]).file_size
        if size > MAX_PICKLE_BYTES:
            raise WeightsError(
                f"{path}: its {pkl[0]} inflates to {size} bytes (a state dict's pickle is a few "
                f"hundred KB, at most {MAX_PICKLE_BYTES}); not read: fetch the file again"
            )
        try:
            obj = _TorchUnpickler(zf.read(pkl[0]), storage).load()
        except _Refused as e:
            raise WeightsError(
                f"{path}: refused: its pickle names {e}, which a weights file does not need "
                "(only tensors and dicts), so loading it could run code; nothing was executed"
            ) from None
        except WeightsError:
            raise
        except Exception as e:  # a damaged pickle
            raise WeightsError(
                f"{path}: damaged torch.save pickle ({type(e).__name__}: {e})"
            ) from None
    return _state_dict(obj, path)


def _state_dict(obj, path: Path) -> dict[str, np.ndarray]:
    """The {name: array} of a state dict, also where a checkpoint wraps it in 'state_dict' or
    'model' (the two conventions training scripts use)."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, np.ndarray) for v in obj.values()):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    return {str(k): v for k, v in obj.items()}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return dict(load_file(str(path)))
    except Exception as e:
        raise WeightsError(f"{path}: not a readable .safetensors file ({e})") from None


def read_h5(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Keras weights: the applications' legacy layout (a group per layer, attribute
    `weight_names`) or Keras 3's `.weights.h5` (`layers/<layer>/vars/<i>`, in the layer's
    variable order). -> (format, {'<layer>/<variable>': array}); Keras 3 variables are named
    by their index, '<layer>/<i>'."""
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f  # a full-model save
            if "layer_names" in root.attrs:
                for layer in root.attrs["layer_names"]:
                    layer = layer.decode() if isinstance(layer, bytes) else str(layer)
                    g = root[layer]
                    for w in g.attrs.get("weight_names", []):
                        w = w.decode() if isinstance(w, bytes) else str(w)
                        var = w.split("/")[-1].split(":")[0]
                        out[f"{layer}/{var}"] = np.asarray(g[w])
                return "keras_h5", out
            if "layers" in root:
                for layer, g in root["layers"].items():
                    if "vars" in g:
                        for i in sorted(g["vars"], key=int):
                            out[f"{layer}/{i}"] = np.asarray(g["vars"][i])
                return "keras3_weights_h5", out
    except OSError as e:
        raise WeightsError(f"{path}: not a readable HDF5 file ({e})") from None
    raise WeightsError(
        f"{path}: an HDF5 file, but not Keras weights (no 'layer_names' attribute and no "
        "'layers' group)"
    )


def read(path) -> tuple[str, dict[str, np.ndarray]]:
    """(format, weights) of a weight file, the format told from its first bytes."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file; pass the path of a downloaded one")
    head = path.open("rb").read(16)
    if head.startswith(ZIP):
        return "torch_zip", read_pth(path)
    if head.startswith(HDF5):
        return read_h5(path)
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors", read_safetensors(path)
    if head[:2] in _PICKLE_PROTOCOLS:
        raise WeightsError(
            f"{path}: a bare pickle (torch.save before PyTorch 1.6, or pickle.dump): not read, "
            "since loading it could run code; re-save it with a current torch.save"
        )
    raise WeightsError(
        f"{path}: not a weights file cnnlab reads (torch.save zip .pth, .safetensors, Keras .h5 "
        "or .weights.h5)"
    )
