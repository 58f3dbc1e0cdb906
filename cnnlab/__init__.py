"""cnnlab: a JAX/Flax research framework for convolutional networks.

Submodules load on first use (`cnnlab.layers`, `cnnlab.summary(model, x)`, `from cnnlab import
train`), so `import cnnlab` and the entry points' flag checks do not pay for importing JAX.
"""

import importlib
import importlib.util

__all__ = ["Row", "Summary", "layers", "summary"]
__version__ = "0.1.0"

_FROM_SUMMARY = ("Row", "Summary")


def __getattr__(name: str):
    if name in _FROM_SUMMARY:
        return getattr(importlib.import_module("cnnlab.summary"), name)
    # any submodule on first use: cnnlab.distributed.start() after `import cnnlab`, as the docs
    # write it; summary is also a module you can call, cnnlab.summary(model, x)
    if not name.startswith("_") and importlib.util.find_spec(f"cnnlab.{name}") is not None:
        return importlib.import_module(f"cnnlab.{name}")
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
